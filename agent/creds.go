package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/master-controller/mc"
)

// resolveHomePath turns a provider's credential path ("~/.x/y.json" or
// ".x/y.json") into an absolute path inside home. It refuses absolute paths
// and any path that leaves home.
func resolveHomePath(home, p string) (string, error) {
	rel := strings.TrimPrefix(p, "~/")
	if rel == "" || filepath.IsAbs(rel) || strings.HasPrefix(rel, "~") {
		return "", mc.Errorf(mc.EINVALID, "invalid_provider", "credential path %q must be relative to the home directory", p)
	}
	clean := filepath.Clean(rel)
	if clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", mc.Errorf(mc.EINVALID, "invalid_provider", "credential path %q leaves the home directory", p)
	}
	return filepath.Join(home, clean), nil
}

// errIncomplete says a credential file is not (yet) what the provider expects.
var errIncomplete = errors.New("incomplete")

// checkCredentialFile reads path and reports whether it parses as a JSON
// object holding every required key (dotted paths walk nested objects).
// It returns the content when complete, else an error wrapping errIncomplete
// or the read error. The error never contains the content.
func checkCredentialFile(path string, required []string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := hasKeys(b, required); err != nil {
		return nil, err
	}
	return b, nil
}

// hasKeys reports whether b is a JSON object that holds every dotted key in
// required with a non-empty value: not null, "", [] or {} (a CLI that fails
// to refresh blanks its values to "", and the file then logs nobody in).
func hasKeys(b []byte, required []string) error {
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("parse json: %w", errIncomplete)
	}
	if _, ok := doc.(map[string]any); !ok {
		return fmt.Errorf("not a json object: %w", errIncomplete)
	}
	for _, key := range required {
		v := doc
		for part := range strings.SplitSeq(key, ".") {
			m, ok := v.(map[string]any)
			if !ok {
				v = nil
				break
			}
			v = m[part]
		}
		if empty(v) {
			return fmt.Errorf("key %q missing or empty: %w", key, errIncomplete)
		}
	}
	return nil
}

// empty reports whether a JSON value is null, "", [] or {}.
func empty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return strings.TrimSpace(v) == ""
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}
