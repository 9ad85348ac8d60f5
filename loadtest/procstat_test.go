package main

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// The command name may hold spaces and parentheses; utime is 1234 and stime 566 ticks.
	stat := []byte("4242 (ledger (x) serve) S 1 4242 4242 0 -1 4194560 2911 0 0 0 1234 566 0 0 20 0 9 0 1234567 1300000000 4000 18446744073709551615\n")
	got, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 18 * time.Second; got != want {
		t.Fatalf("cpu = %s, want %s", got, want)
	}
	if _, err := parseStatCPU([]byte("4242 (short) S 1 2")); err == nil {
		t.Fatal("a truncated stat line parsed")
	}
}

func TestParseStatusRSS(t *testing.T) {
	status := []byte("Name:\tledger\nVmPeak:\t 1300000 kB\nVmRSS:\t   51200 kB\nThreads:\t9\n")
	got, err := parseStatusRSS(status)
	if err != nil {
		t.Fatal(err)
	}
	if got != 50<<20 {
		t.Fatalf("rss = %d, want 50 MiB", got)
	}
	if _, err := parseStatusRSS([]byte("Name:\tx\n")); err == nil {
		t.Fatal("status without VmRSS parsed")
	}
}

// TestReadProcSelf reads this process's own counters where /proc exists.
func TestReadProcSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.rssBytes <= 0 {
		t.Fatalf("own resident set %d bytes", s.rssBytes)
	}
	rep := watchProc(os.Getpid()).stop()
	if rep.Error != "" || rep.RSSMaxMiB <= 0 {
		t.Fatalf("watch of self: %+v", rep)
	}
}
