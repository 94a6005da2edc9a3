package wsproto

import "unicode/utf8"

// utf8State checks a text message's UTF-8 as it arrives in pieces: it holds
// the bytes of a character that a piece ended inside of.
type utf8State struct {
	buf [utf8.UTFMax]byte
	n   int
}

// feed checks p, which follows what was fed before. It reports false as
// soon as the bytes cannot be the start of valid UTF-8 (failing fast, as
// RFC 6455 §8.1 allows).
func (s *utf8State) feed(p []byte) bool {
	for s.n > 0 && len(p) > 0 {
		s.buf[s.n] = p[0]
		s.n++
		p = p[1:]
		if utf8.FullRune(s.buf[:s.n]) {
			if !utf8.Valid(s.buf[:s.n]) {
				return false
			}
			s.n = 0
		} else if !validPrefix(s.buf[:s.n]) {
			return false
		}
	}
	if len(p) == 0 {
		return true
	}
	// Hold back an incomplete character at the end.
	cut := len(p)
	for i := len(p) - 1; i >= 0 && i >= len(p)-(utf8.UTFMax-1); i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				cut = i
			}
			break
		}
	}
	if !utf8.Valid(p[:cut]) || !validPrefix(p[cut:]) {
		return false
	}
	s.n = copy(s.buf[:], p[cut:])
	return true
}

// end reports whether the message ended on a character boundary.
func (s *utf8State) end() bool { return s.n == 0 }

// validPrefix reports whether b (shorter than its character) can begin a
// valid UTF-8 character: a lead byte C2–F4 and continuation bytes in the
// ranges that exclude overlong forms, surrogates and code points past
// U+10FFFF.
func validPrefix(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	lo, hi := byte(0x80), byte(0xBF)
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF, c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF, c >= 0xF1 && c <= 0xF3:
	case c == 0xE0:
		lo = 0xA0
	case c == 0xED:
		hi = 0x9F
	case c == 0xF0:
		lo = 0x90
	case c == 0xF4:
		hi = 0x8F
	default:
		return false
	}
	for i, c := range b[1:] {
		if i == 0 && (c < lo || c > hi) || i > 0 && (c < 0x80 || c > 0xBF) {
			return false
		}
	}
	return true
}
