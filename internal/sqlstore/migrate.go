package sqlstore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// migrations are the shared schema, written once for both databases: their
// {{words}} become the dialect's types (Dialect.Types).
//
//go:embed migrations/*.sql
var migrations embed.FS

const schemaMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	name       TEXT    NOT NULL,
	applied_at {{time}} NOT NULL
){{strict}}`

// migration is one version of the schema: the shared text and the dialect's
// addition, either of which may be empty.
type migration struct {
	version int
	name    string
	body    string
}

// Migrate applies the migrations that the database has not had yet and
// records them in schema_migrations, in one transaction (after the
// dialect's MigrateLock, if any). It is idempotent.
func (s *Store) Migrate(ctx context.Context) error {
	list, err := s.migrations()
	if err != nil {
		return s.err(err, "read migrations")
	}
	var applied []string
	err = s.write(ctx, func(t tx) error {
		if s.d.MigrateLock != "" {
			if _, err := t.exec(ctx, s.d.MigrateLock); err != nil {
				return err
			}
		}
		if _, err := t.exec(ctx, s.expand(schemaMigrations)); err != nil {
			return err
		}
		for _, m := range list {
			var n int
			if err := t.row(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				continue
			}
			// No arguments: several statements run as one.
			if _, err := t.tx.ExecContext(ctx, m.body); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
			if _, err := t.exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.version, m.name, s.d.Time(s.now())); err != nil {
				return err
			}
			applied = append(applied, m.name)
		}
		return nil
	}, "migrate %s", s.d.Name)
	if err != nil {
		return err
	}
	for _, name := range applied {
		s.log.Info("applied migration", "migration", name)
	}
	return nil
}

// migrations merges the shared migrations with the dialect's, by version.
func (s *Store) migrations() ([]migration, error) {
	byVersion := map[int]*migration{}
	add := func(fsys fs.FS, dir string) error {
		names, err := fs.Glob(fsys, path.Join(dir, "*.sql"))
		if err != nil {
			return err
		}
		for _, name := range names {
			base := path.Base(name)
			v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
			if err != nil {
				return fmt.Errorf("migration %s: name must start with a number: %w", base, err)
			}
			body, err := fs.ReadFile(fsys, name)
			if err != nil {
				return err
			}
			m := byVersion[v]
			if m == nil {
				m = &migration{version: v, name: base}
				byVersion[v] = m
			}
			m.body += s.expand(string(body)) + "\n"
		}
		return nil
	}
	if err := add(migrations, "migrations"); err != nil {
		return nil, err
	}
	if s.d.Migrations != nil {
		if err := add(s.d.Migrations, "."); err != nil {
			return nil, err
		}
	}
	list := make([]migration, 0, len(byVersion))
	for _, m := range byVersion {
		list = append(list, *m)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].version < list[j].version })
	return list, nil
}

// expand replaces the {{words}} of a shared text with the dialect's.
func (s *Store) expand(text string) string {
	for word, with := range s.d.Types {
		text = strings.ReplaceAll(text, "{{"+word+"}}", with)
	}
	return text
}
