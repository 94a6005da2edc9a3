package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// watchedFile is one credential file the login waits for.
type watchedFile struct {
	// Name is the path as the provider spelled it (the key in the result).
	Name string
	// Path is the absolute path inside home.
	Path         string
	RequiredKeys []string
	// Before is the file as it was when the login started (nil if absent):
	// a file left from before counts only once it has been rewritten.
	Before os.FileInfo
}

// unchanged reports whether st is the same file, unmodified, as before.
func unchanged(before, st os.FileInfo) bool {
	return before != nil && os.SameFile(before, st) && before.ModTime().Equal(st.ModTime()) && before.Size() == st.Size()
}

// safetyInterval bounds how long a missed file-system event can delay the
// watcher; inotify normally wakes it at once.
const safetyInterval = 500 * time.Millisecond

// waitForFiles blocks until every file exists and holds its required keys,
// and returns their contents by Name. It wakes on inotify events on the
// files' directories (or their nearest existing ancestor inside home, so that
// directories the login creates are followed), with a slow re-check as a
// safety net. It returns ctx's error when ctx ends first.
func waitForFiles(ctx context.Context, home string, files []watchedFile) (map[string]string, error) {
	w, err := newDirWatcher()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	tick := time.NewTicker(safetyInterval)
	defer tick.Stop()
	for {
		// Add watches until the set of watched directories is stable, so a
		// directory created while we were adding watches is not missed.
		var prev []string
		for {
			dirs := watchDirs(home, files)
			if slices.Equal(dirs, prev) {
				break
			}
			for _, d := range dirs {
				if err := w.Add(d); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOENT) {
					return nil, fmt.Errorf("watch %s: %w", d, err)
				}
			}
			prev = dirs
		}
		if got, ok := checkAll(files); ok {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-w.Events:
		case <-tick.C:
		}
	}
}

// checkAll reads every file; ok is true when all are complete.
func checkAll(files []watchedFile) (map[string]string, bool) {
	got := make(map[string]string, len(files))
	for _, f := range files {
		if st, err := os.Stat(f.Path); err != nil || unchanged(f.Before, st) {
			return nil, false
		}
		b, err := checkCredentialFile(f.Path, f.RequiredKeys)
		if err != nil {
			return nil, false
		}
		got[f.Name] = string(b)
	}
	return got, true
}

// watchDirs returns, sorted, for each file its directory or the nearest
// ancestor of it that exists (never above home).
func watchDirs(home string, files []watchedFile) []string {
	var dirs []string
	for _, f := range files {
		d := filepath.Dir(f.Path)
		for {
			if st, err := os.Stat(d); err == nil && st.IsDir() {
				break
			}
			if d == home || d == filepath.Dir(d) {
				break
			}
			d = filepath.Dir(d)
		}
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	slices.Sort(dirs)
	return dirs
}

// dirWatcher is a minimal inotify watcher: Events receives a value (coalesced)
// whenever anything happens in a watched directory.
type dirWatcher struct {
	f      *os.File
	Events chan struct{}
	done   chan struct{}
}

func newDirWatcher() (*dirWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify init: %w", err)
	}
	// A non-blocking fd goes through the runtime poller, so Close unblocks Read.
	w := &dirWatcher{f: os.NewFile(uintptr(fd), "inotify"), Events: make(chan struct{}, 1), done: make(chan struct{})}
	go w.read()
	return w, nil
}

func (w *dirWatcher) read() {
	defer close(w.done)
	buf := make([]byte, 16*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		if _, err := w.f.Read(buf); err != nil {
			return
		}
		select {
		case w.Events <- struct{}{}:
		default:
		}
	}
}

// Add watches dir (adding the same directory again is harmless).
func (w *dirWatcher) Add(dir string) error {
	const mask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_CLOSE_WRITE | unix.IN_MODIFY |
		unix.IN_DELETE | unix.IN_ATTRIB | unix.IN_ONLYDIR
	sc, err := w.f.SyscallConn()
	if err != nil {
		return err
	}
	var addErr error
	if err := sc.Control(func(fd uintptr) {
		_, addErr = unix.InotifyAddWatch(int(fd), dir, mask)
	}); err != nil {
		return err
	}
	return addErr
}

// Close stops the watcher.
func (w *dirWatcher) Close() error {
	err := w.f.Close()
	<-w.done
	return err
}
