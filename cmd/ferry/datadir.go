package main

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/ferryrelay/ferry/config"
)

// Modes of the data directory and the files in it: they hold the TURN secret, the room
// signing key and the allocation log (IP addresses), so no other local user may read them.
const (
	dataDirMode  fs.FileMode = 0o700
	dataFileMode fs.FileMode = 0o600
	// serveUmask makes every file serve creates 0600 and every directory 0700 whatever the
	// umask it was started with: SQLite creates alloclog.db-wal and -shm with the process
	// umask.
	serveUmask = 0o077
)

// usesDataDir reports whether serve keeps anything in the data directory: a generated
// secret or room signing key, or the allocation log.
func usesDataDir(f *config.File) bool {
	return f.AllocLog.Enabled || len(f.Auth.Secrets) == 0 || f.Rooms.Enabled && len(f.Rooms.SigningKeys) == 0
}

// secureDataDir makes dir 0700 and every file directly in it 0600 (the allocation log with
// its -wal and -shm files, the keys), whatever earlier versions, a restored backup or a
// umask left, and says what it changed.
func secureDataDir(dir string, log *slog.Logger) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if fi.Mode().Perm() != dataDirMode {
		if err := os.Chmod(dir, dataDirMode); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		log.Info("data directory made private", "mode_was", fi.Mode().Perm().String(), "mode", dataDirMode.String())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil || info.Mode().Perm() == dataFileMode {
			continue
		}
		if err := os.Chmod(filepath.Join(dir, e.Name()), dataFileMode); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		log.Info("data file made private", "file", e.Name(), "mode_was", info.Mode().Perm().String(), "mode", dataFileMode.String())
	}
	return nil
}
