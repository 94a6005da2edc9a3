package agent

import (
	"encoding/binary"
	"fmt"
	"image"
	"image/png"
	"io"
	"net"
	"os"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/rfb"
)

// rfbClient is a minimal RFB 3.8 client for tests: VNC authentication, a
// 32-bit true-colour framebuffer read with Raw encoding, pointer events.
type rfbClient struct {
	conn   net.Conn
	W, H   int
	pixels []byte // BGRX, W*H*4
}

func dialRFB(tb testing.TB, addr, password string) *rfbClient {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatalf("dial vnc: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &rfbClient{conn: conn}
	if err := c.handshake(password); err != nil {
		tb.Fatalf("rfb handshake: %v", err)
	}
	return c
}

func (c *rfbClient) handshake(password string) error {
	banner := make([]byte, 12)
	if _, err := io.ReadFull(c.conn, banner); err != nil {
		return err
	}
	if string(banner) != "RFB 003.008\n" {
		return fmt.Errorf("banner %q", banner)
	}
	if _, err := c.conn.Write(banner); err != nil {
		return err
	}
	var n [1]byte
	if _, err := io.ReadFull(c.conn, n[:]); err != nil {
		return err
	}
	types := make([]byte, n[0])
	if _, err := io.ReadFull(c.conn, types); err != nil {
		return err
	}
	if n[0] == 0 || types[0] != 2 {
		return fmt.Errorf("security types %v, want [2] (VNC auth)", types)
	}
	if _, err := c.conn.Write([]byte{2}); err != nil {
		return err
	}
	var challenge [16]byte
	if _, err := io.ReadFull(c.conn, challenge[:]); err != nil {
		return err
	}
	resp := rfb.EncryptChallenge(mc.SecretOf(password), challenge)
	if _, err := c.conn.Write(resp[:]); err != nil {
		return err
	}
	var result uint32
	if err := binary.Read(c.conn, binary.BigEndian, &result); err != nil {
		return err
	}
	if result != 0 {
		return fmt.Errorf("vnc authentication failed (%d)", result)
	}
	if _, err := c.conn.Write([]byte{1}); err != nil { // shared
		return err
	}
	var init struct {
		W, H    uint16
		Format  [16]byte
		NameLen uint32
	}
	if err := binary.Read(c.conn, binary.BigEndian, &init); err != nil {
		return err
	}
	if _, err := io.CopyN(io.Discard, c.conn, int64(init.NameLen)); err != nil {
		return err
	}
	c.W, c.H = int(init.W), int(init.H)
	c.pixels = make([]byte, c.W*c.H*4)
	// SetPixelFormat: 32 bpp, depth 24, little endian, true colour, BGRX.
	pf := []byte{0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0}
	// SetEncodings: Raw only.
	enc := []byte{2, 0, 0, 1, 0, 0, 0, 0}
	_, err := c.conn.Write(append(pf, enc...))
	return err
}

// Refresh reads the whole framebuffer.
func (c *rfbClient) Refresh() error {
	_ = c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	req := []byte{3, 0, 0, 0, 0, 0, byte(c.W >> 8), byte(c.W), byte(c.H >> 8), byte(c.H)}
	if _, err := c.conn.Write(req); err != nil {
		return err
	}
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
			return err
		}
		switch hdr[0] {
		case 0: // FramebufferUpdate
		case 2: // Bell
			continue
		default:
			return fmt.Errorf("unexpected server message %d", hdr[0])
		}
		nrects := int(binary.BigEndian.Uint16(hdr[2:]))
		for range nrects {
			var r struct {
				X, Y, W, H uint16
				Enc        int32
			}
			if err := binary.Read(c.conn, binary.BigEndian, &r); err != nil {
				return err
			}
			if r.Enc != 0 {
				return fmt.Errorf("encoding %d, want raw", r.Enc)
			}
			row := make([]byte, int(r.W)*4)
			for y := int(r.Y); y < int(r.Y)+int(r.H); y++ {
				if _, err := io.ReadFull(c.conn, row); err != nil {
					return err
				}
				copy(c.pixels[(y*c.W+int(r.X))*4:], row)
			}
		}
		return nil
	}
}

// Pixel returns the colour at (x, y) as "#rrggbb".
func (c *rfbClient) Pixel(x, y int) string {
	i := (y*c.W + x) * 4
	return fmt.Sprintf("#%02x%02x%02x", c.pixels[i+2], c.pixels[i+1], c.pixels[i])
}

// Click presses and releases the left button at (x, y).
func (c *rfbClient) Click(x, y int) error {
	_ = c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	ev := func(mask byte) []byte {
		return []byte{5, mask, byte(x >> 8), byte(x), byte(y >> 8), byte(y)}
	}
	_, err := c.conn.Write(append(append(ev(0), ev(1)...), ev(0)...))
	return err
}

// SavePNG writes the framebuffer to path (for a failing test's diagnosis).
func (c *rfbClient) SavePNG(path string) error {
	img := image.NewRGBA(image.Rect(0, 0, c.W, c.H))
	for i := 0; i < c.W*c.H; i++ {
		img.Pix[i*4], img.Pix[i*4+1], img.Pix[i*4+2], img.Pix[i*4+3] = c.pixels[i*4+2], c.pixels[i*4+1], c.pixels[i*4], 255
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}
