package agent

import (
	"fmt"

	"github.com/master-controller/mc/internal/atomicfile"
	"github.com/master-controller/mc/rfb"
)

// vncObfuscationKey is the fixed DES key that VNC implementations use to
// obfuscate stored passwords (it hides them from a casual look, nothing more;
// the file must still be private).
var vncObfuscationKey = [8]byte{23, 82, 107, 6, 35, 78, 88, 7}

// ObfuscateVNCPassword returns the 8 bytes that TigerVNC's `vncpasswd -f`
// writes for password: its first 8 bytes (zero-padded), DES-encrypted with
// the fixed VNC key. VNC authentication only ever uses 8 bytes.
func ObfuscateVNCPassword(password string) []byte {
	var block [8]byte
	copy(block[:], password)
	out := rfb.DES(vncObfuscationKey, block)
	return out[:]
}

// writeVNCPasswordFile writes password in vncpasswd format to path with mode
// 0600, atomically.
func writeVNCPasswordFile(path, password string) error {
	if err := atomicfile.Write(path, ObfuscateVNCPassword(password), 0o600); err != nil {
		return fmt.Errorf("write vnc password file %s: %w", path, err)
	}
	return nil
}
