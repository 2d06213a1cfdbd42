// Package sockopt opens and tunes the relay's sockets: SO_REUSEPORT groups of UDP listener
// sockets, socket buffers, and address reuse for RFC 6062 connections. Linux gets all of it;
// other systems (a developer's laptop) get plain sockets.
package sockopt
