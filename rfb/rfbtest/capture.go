package rfbtest

import (
	"encoding/binary"
	"fmt"
	"image"
	"io"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/rfb"
)

// maxPixels bounds the framebuffer a capture accepts (64 Mpixel).
const maxPixels = 1 << 26

// Capture connects as a shared client over conn, asks for the whole screen in
// Raw encoding and returns the first framebuffer update as an image. password
// is the VNC password, or the zero Secret for a server that offers None (such
// as the gateway). The caller sets deadlines on conn and closes it.
func Capture(conn io.ReadWriter, password mc.Secret) (*image.RGBA, error) {
	if _, err := rfb.ClientHandshake(conn, password); err != nil {
		return nil, err
	}
	if _, err := conn.Write([]byte{1}); err != nil { // ClientInit, shared
		return nil, fmt.Errorf("write client init: %w", err)
	}
	var si [24]byte
	if _, err := io.ReadFull(conn, si[:]); err != nil {
		return nil, fmt.Errorf("read server init: %w", err)
	}
	w, h := int(binary.BigEndian.Uint16(si[0:])), int(binary.BigEndian.Uint16(si[2:]))
	if w*h > maxPixels {
		return nil, fmt.Errorf("framebuffer %dx%d too large", w, h)
	}
	nameLen := binary.BigEndian.Uint32(si[20:])
	if nameLen > rfb.MaxReasonLen {
		return nil, fmt.Errorf("desktop name of %d bytes: %w", nameLen, rfb.ErrNotRFB)
	}
	if _, err := io.CopyN(io.Discard, conn, int64(nameLen)); err != nil {
		return nil, fmt.Errorf("read desktop name: %w", err)
	}

	msgs := make([]byte, 0, 64)
	msgs = append(msgs, 0, 0, 0, 0)
	msgs = append(msgs, DefaultPixelFormat.marshal()...)
	msgs = append(msgs, 2, 0, 0, 1, 0, 0, 0, 0) // SetEncodings: Raw
	msgs = append(msgs, 3, 0, 0, 0, 0, 0)       // FramebufferUpdateRequest, full
	msgs = binary.BigEndian.AppendUint16(msgs, uint16(w))
	msgs = binary.BigEndian.AppendUint16(msgs, uint16(h))
	if _, err := conn.Write(msgs); err != nil {
		return nil, fmt.Errorf("write requests: %w", err)
	}

	img := image.NewRGBA(image.Rect(0, 0, w, h))
	var t [1]byte
	for {
		if _, err := io.ReadFull(conn, t[:]); err != nil {
			return nil, fmt.Errorf("read server message: %w", err)
		}
		switch t[0] {
		case 0: // FramebufferUpdate
			var b [3]byte
			if _, err := io.ReadFull(conn, b[:]); err != nil {
				return nil, err
			}
			n := int(binary.BigEndian.Uint16(b[1:]))
			for range n {
				if err := readRawRect(conn, img); err != nil {
					return nil, err
				}
			}
			return img, nil
		case 1: // SetColourMapEntries
			var b [5]byte
			if _, err := io.ReadFull(conn, b[:]); err != nil {
				return nil, err
			}
			if _, err := io.CopyN(io.Discard, conn, 6*int64(binary.BigEndian.Uint16(b[3:]))); err != nil {
				return nil, err
			}
		case 2: // Bell
		case 3: // ServerCutText
			var b [7]byte
			if _, err := io.ReadFull(conn, b[:]); err != nil {
				return nil, err
			}
			if _, err := io.CopyN(io.Discard, conn, int64(binary.BigEndian.Uint32(b[3:]))); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unknown server message type %d", t[0])
		}
	}
}

// readRawRect reads one rectangle header and its Raw pixels (in
// DefaultPixelFormat) into img.
func readRawRect(r io.Reader, img *image.RGBA) error {
	var rh [12]byte
	if _, err := io.ReadFull(r, rh[:]); err != nil {
		return fmt.Errorf("read rectangle: %w", err)
	}
	x, y := int(binary.BigEndian.Uint16(rh[0:])), int(binary.BigEndian.Uint16(rh[2:]))
	w, h := int(binary.BigEndian.Uint16(rh[4:])), int(binary.BigEndian.Uint16(rh[6:]))
	enc := int32(binary.BigEndian.Uint32(rh[8:]))
	if enc != 0 {
		return fmt.Errorf("rectangle encoding %d, want Raw (0)", enc)
	}
	if !image.Rect(x, y, x+w, y+h).In(img.Rect) {
		return fmt.Errorf("rectangle %dx%d+%d+%d outside the framebuffer", w, h, x, y)
	}
	row := make([]byte, 4*w)
	for j := range h {
		if _, err := io.ReadFull(r, row); err != nil {
			return fmt.Errorf("read pixels: %w", err)
		}
		off := img.PixOffset(x, y+j)
		for i := range w {
			// Little-endian 32-bit pixel, red at 16, green at 8, blue at 0.
			px := row[4*i:]
			img.Pix[off+4*i+0] = px[2]
			img.Pix[off+4*i+1] = px[1]
			img.Pix[off+4*i+2] = px[0]
			img.Pix[off+4*i+3] = 0xff
		}
	}
	return nil
}
