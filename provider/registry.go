package provider

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"time"

	mc "github.com/master-controller/mc"
)

// Registry holds the providers by name. It is read-only once built, so it is
// safe for concurrent use; it hands out copies.
type Registry struct {
	byName map[string]mc.Provider
	// pools are the warm pool sizes that the file sets.
	pools map[string]int
}

// New returns a registry of the built-in providers.
func New() *Registry {
	r := &Registry{byName: map[string]mc.Provider{}, pools: map[string]int{}}
	for _, p := range Builtins() {
		r.byName[p.Name] = p
	}
	return r
}

// Load returns the built-in providers overridden and extended by the
// configuration file at path (see the package documentation); an empty path
// means the built-ins alone.
// Errors: EINVALID (reason "invalid_provider", cause *ConfigError listing
// every problem), or the error of reading the file.
func Load(path string) (*Registry, error) {
	if path == "" {
		return New(), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read provider configuration %s: %w", path, err)
	}
	r, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("load provider configuration %s: %w", path, err)
	}
	return r, nil
}

// file is the configuration file's shape.
type file struct {
	Providers []entry `json:"providers"`
}

// entry is one provider in the file. A nil field is absent: it keeps the
// built-in's value.
type entry struct {
	Name         string               `json:"name"`
	DisplayName  *string              `json:"display_name"`
	StartURL     *string              `json:"start_url"`
	LoginCommand *[]string            `json:"login_command"`
	Files        *[]mc.CredentialFile `json:"files"`
	Env          *map[string]string   `json:"env"`
	SeedFiles    *[]mc.SeedFile       `json:"seed_files"`
	Answers      *[]mc.Answer         `json:"answers"`
	Kind         *mc.CredentialKind   `json:"kind"`
	// OpenURL, PasteBack and StdoutCapture: an object sets, null clears.
	OpenURL       json.RawMessage `json:"open_url"`
	PasteBack     json.RawMessage `json:"paste_back"`
	StdoutCapture json.RawMessage `json:"stdout_capture"`
	// LoginTimeout is a Go duration ("10m", "1h30m").
	LoginTimeout *string `json:"login_timeout"`
	Disabled     bool    `json:"disabled"`
	// Pool is the number of pre-started machines to keep for it.
	Pool *int `json:"pool"`
}

// Parse returns the built-in providers overridden and extended by a
// configuration file's content.
// Errors: EINVALID (reason "invalid_provider", cause *ConfigError).
func Parse(data []byte) (*Registry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, configError([]string{"not a provider configuration: " + jsonProblem(err)})
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, configError([]string{"not a provider configuration: data after the JSON object"})
	}

	r := New()
	var probs []string
	seen := map[string]bool{}
	for i, e := range f.Providers {
		if e.Name == "" {
			probs = append(probs, fmt.Sprintf("providers[%d]: name is missing", i))
			continue
		}
		if seen[e.Name] {
			probs = append(probs, fmt.Sprintf("provider %q: listed twice", e.Name))
			continue
		}
		seen[e.Name] = true
		if e.Disabled {
			delete(r.byName, e.Name)
			continue
		}
		p, builtin := r.byName[e.Name]
		if !builtin {
			p = mc.Provider{Name: e.Name, DisplayName: e.Name, LoginTimeout: DefaultLoginTimeout}
		}
		if e.DisplayName != nil {
			p.DisplayName = *e.DisplayName
		}
		if e.StartURL != nil {
			p.StartURL = *e.StartURL
		}
		if e.LoginCommand != nil {
			p.LoginCommand = *e.LoginCommand
		}
		if e.Files != nil {
			p.Files = *e.Files
		}
		if e.Env != nil {
			p.Env = *e.Env
		}
		if e.SeedFiles != nil {
			p.SeedFiles = *e.SeedFiles
		}
		if e.Answers != nil {
			p.Answers = *e.Answers
		}
		if e.Kind != nil {
			p.Kind = *e.Kind
		}
		for _, o := range []struct {
			field string
			raw   json.RawMessage
			set   func(dec func(any) error) error
		}{
			{"open_url", e.OpenURL, func(dec func(any) error) error { p.OpenURL = nil; return dec(&p.OpenURL) }},
			{"paste_back", e.PasteBack, func(dec func(any) error) error { p.PasteBack = nil; return dec(&p.PasteBack) }},
			{"stdout_capture", e.StdoutCapture, func(dec func(any) error) error { p.StdoutCapture = nil; return dec(&p.StdoutCapture) }},
		} {
			if o.raw == nil {
				continue
			}
			err := o.set(func(v any) error {
				d := json.NewDecoder(bytes.NewReader(o.raw))
				d.DisallowUnknownFields()
				return d.Decode(v)
			})
			if err != nil {
				probs = append(probs, fmt.Sprintf("provider %q: %s: %s", e.Name, o.field, jsonProblem(err)))
			}
		}
		if e.LoginTimeout != nil {
			d, err := time.ParseDuration(*e.LoginTimeout)
			if err != nil {
				probs = append(probs, fmt.Sprintf("provider %q: login_timeout %q is not a duration like \"15m\"", e.Name, *e.LoginTimeout))
				continue
			}
			p.LoginTimeout = d
		}
		if e.Pool != nil {
			if *e.Pool < 0 || *e.Pool > 1000 {
				probs = append(probs, fmt.Sprintf("provider %q: pool %d is outside 0–1000", e.Name, *e.Pool))
				continue
			}
			r.pools[e.Name] = *e.Pool
		}
		r.byName[e.Name] = clone(p)
	}
	for _, p := range r.All() {
		probs = append(probs, problems(p)...)
	}
	if len(r.byName) == 0 {
		probs = append(probs, "every provider is disabled")
	}
	if len(probs) > 0 {
		return nil, configError(probs)
	}
	return r, nil
}

// jsonProblem describes a decoding error without quoting the input.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("JSON syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q: want %s, got JSON %s", typ.Field, typ.Type, typ.Value)
	case errors.Is(err, io.EOF):
		return "empty file"
	}
	return err.Error() // "json: unknown field \"x\"" and the like
}

// Pools returns the warm pool sizes that the configuration file sets, by
// provider name (a copy).
func (r *Registry) Pools() map[string]int {
	return maps.Clone(r.pools)
}

// Get returns a copy of the provider of the given name.
func (r *Registry) Get(name string) (mc.Provider, bool) {
	p, ok := r.byName[name]
	if !ok {
		return mc.Provider{}, false
	}
	return clone(p), true
}

// All returns copies of every provider, sorted by name.
func (r *Registry) All() []mc.Provider {
	out := make([]mc.Provider, 0, len(r.byName))
	for _, name := range r.Names() {
		out = append(out, clone(r.byName[name]))
	}
	return out
}

// Names returns the provider names, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.byName))
	for name := range r.byName {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
