//go:build !unix

package main

import "net"

// stillOpen cannot look at the socket here: an idle connection is taken to be open.
func stillOpen(net.Conn) bool { return true }
