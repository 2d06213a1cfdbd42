//go:build !unix

package main

// setUmask does nothing where there is no umask (Windows: the data directory's ACL decides).
func setUmask(int) {}
