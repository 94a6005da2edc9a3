package agent

import (
	"crypto/des"
	"fmt"
	"os"
	"path/filepath"
)

// vncObfuscationKey is the fixed DES key that VNC implementations use to
// obfuscate stored passwords (it hides them from a casual look, nothing more;
// the file must still be private).
var vncObfuscationKey = [8]byte{23, 82, 107, 6, 35, 78, 88, 7}

// ObfuscateVNCPassword returns the 8 bytes that TigerVNC's `vncpasswd -f`
// writes for password: its first 8 bytes (zero-padded), DES-encrypted with
// the fixed VNC key. VNC authentication only ever uses 8 bytes.
func ObfuscateVNCPassword(password string) []byte {
	return vncDES(vncObfuscationKey, vncKey(password))
}

// vncKey is the 8-byte zero-padded form of a VNC password.
func vncKey(password string) [8]byte {
	var k [8]byte
	copy(k[:], password)
	return k
}

// vncDES encrypts one 8-byte block with key the way VNC does: VNC's d3des
// takes each key byte with its bits mirrored.
func vncDES(key [8]byte, block [8]byte) []byte {
	var rk [8]byte
	for i, b := range key {
		rk[i] = reverseBits(b)
	}
	c, err := des.NewCipher(rk[:])
	if err != nil {
		panic("des: " + err.Error()) // only for a key length other than 8
	}
	out := make([]byte, 8)
	c.Encrypt(out, block[:])
	return out
}

// VNCAuthResponse answers a VNC authentication challenge of 16 bytes with
// password, as a VNC client does.
func VNCAuthResponse(password string, challenge []byte) []byte {
	k := vncKey(password)
	out := make([]byte, 0, len(challenge))
	for i := 0; i+8 <= len(challenge); i += 8 {
		var b [8]byte
		copy(b[:], challenge[i:i+8])
		out = append(out, vncDES(k, b)...)
	}
	return out
}

func reverseBits(b byte) byte {
	var r byte
	for i := 0; i < 8; i++ {
		r = r<<1 | b&1
		b >>= 1
	}
	return r
}

// writeVNCPasswordFile writes password in vncpasswd format to path with mode
// 0600, atomically.
func writeVNCPasswordFile(path, password string) error {
	if err := writeFileAtomic(path, ObfuscateVNCPassword(password), 0o600); err != nil {
		return fmt.Errorf("write vnc password file %s: %w", path, err)
	}
	return nil
}

// writeFileAtomic writes data to a temporary file beside path and renames it
// over path, so that a reader sees the old file or the whole new one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
