//go:build unix

package main

import (
	"net"
	"syscall"
)

// stillOpen reports whether the server has left an idle connection open: a peek finds neither
// data (an idle connection has nothing to read) nor the end of the stream. It does not wait:
// the runtime keeps every socket non-blocking, so an empty one answers EAGAIN.
func stillOpen(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	// Control rather than Read: Read refuses once the last request's deadline has passed,
	// which it has on a connection that waited long enough in the pool.
	err = rc.Control(func(fd uintptr) {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
		open = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	})
	return err == nil && open
}
