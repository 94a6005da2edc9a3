package jsonkey_test

import (
	"strings"
	"testing"

	"github.com/master-controller/mc/internal/jsonkey"
)

func TestDuplicate(t *testing.T) {
	tests := []struct {
		doc  string
		want string // "" for none
	}{
		{`{"user_id":"a","provider":"demo"}`, ""},
		{`{"user_id":"a","user_id":"b"}`, "user_id"},
		{`{"user_id":"a","USER_ID":"b"}`, "USER_ID"},
		{`{"k":1,"\u212a":2}`, "\u212a"}, // KELVIN SIGN folds to k, as encoding/json matches it
		{`{"a":{"x":1,"y":2},"b":{"x":1}}`, ""},
		{`{"a":{"x":1,"X":2}}`, "X"},
		{`{"a":[{"x":1},{"x":2}],"b":[1,"b",{"b":1}]}`, ""},
		{`[{"x":1,"x":2}]`, "x"},
		{`{"a":"b","b":"a"}`, ""},
		{`{"a":[],"a":1}`, "a"},
		{`{"a":{},"b":1,"a":2}`, "a"},
		{`"x"`, ""},
		{`{"a":1,"a"`, "a"},
		{`{"a":1,`, ""},
		{`not json`, ""},
		{``, ""},
	}
	for _, tt := range tests {
		got, ok := jsonkey.Duplicate([]byte(tt.doc))
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("Duplicate(%s): got %q %v, want %q", tt.doc, got, ok, tt.want)
		}
	}
}

func TestFold(t *testing.T) {
	for _, pair := range [][2]string{{"user_id", "USER_ID"}, {"k", "\u212a"}, {"straße", "STRASSE"}, {"ß", "ẞ"}} {
		if want := strings.EqualFold(pair[0], pair[1]); (jsonkey.Fold(pair[0]) == jsonkey.Fold(pair[1])) != want {
			t.Errorf("Fold(%q) == Fold(%q): got %v, want %v (as EqualFold)", pair[0], pair[1], !want, want)
		}
	}
}
