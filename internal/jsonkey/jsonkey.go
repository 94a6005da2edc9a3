// Package jsonkey finds duplicate object keys in a JSON document.
//
// encoding/json keeps the last of two equal keys and matches keys to struct
// fields without regard to case, so {"user_id":"a","USER_ID":"b"} decodes
// as user_id "b" while a proxy or a log reader in front of it may well see
// "a". The API refuses such a body, and tests refuse such a log line, with
// the one check here.
package jsonkey

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Duplicate returns the first key of doc that repeats a key of the same
// object, compared as encoding/json matches keys to fields (Unicode simple
// case folding), and true; or "", false when every object's keys are
// distinct. A document that is not valid JSON has no duplicate as far as
// Duplicate can tell: it reports the keys it saw before the error, and
// leaves the syntax error to the decoder.
func Duplicate(doc []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	// One frame per open object or array; an array's frame has no key set.
	type frame struct {
		keys     map[string]bool // nil for an array
		wantsKey bool            // in an object, the next string is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil { // the end, or a syntax error
			return "", false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{':
				if top != nil && top.keys != nil {
					top.wantsKey = true // the object is this key's value
				}
				stack = append(stack, &frame{keys: map[string]bool{}, wantsKey: true})
			case '[':
				if top != nil && top.keys != nil {
					top.wantsKey = true
				}
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if top == nil || top.keys == nil {
			continue // a scalar at the top or in an array
		}
		if !top.wantsKey {
			top.wantsKey = true // a scalar value; a key comes next
			continue
		}
		key, _ := tok.(string)
		k := Fold(key)
		if top.keys[k] {
			return key, true
		}
		top.keys[k] = true
		top.wantsKey = false
	}
}

// Fold returns s with every rune replaced by the smallest rune of its
// simple case-folding orbit, so that Fold(a) == Fold(b) exactly when
// strings.EqualFold(a, b) (and encoding/json would match a to a field named
// b).
func Fold(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r == utf8.RuneError {
			b.WriteRune(r)
			continue
		}
		min := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < min {
				min = f
			}
		}
		b.WriteRune(min)
	}
	return b.String()
}
