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

func TestParseProcStat(t *testing.T) {
	// Two CPUs; guest (9) and guest_nice (10) are already inside user and nice, so they must
	// not be added again.
	stat := []byte("cpu  1000 20 300 5000 400 6 70 8 9 10\n" +
		"cpu0 500 10 150 2500 200 3 35 4 5 5\n" +
		"cpu1 500 10 150 2500 200 3 35 4 4 5\n" +
		"intr 4230387 0 0 0\nctxt 12943126\nbtime 1700000000\nprocesses 1234\n")
	got, err := parseProcStat(stat)
	if err != nil {
		t.Fatal(err)
	}
	want := machineSample{busy: 1000 + 20 + 300 + 6 + 70 + 8, total: 1000 + 20 + 300 + 6 + 70 + 8 + 5000 + 400, cpus: 2}
	if got != want {
		t.Fatalf("parseProcStat = %+v, want %+v", got, want)
	}

	// An old kernel without steal, guest and guest_nice.
	got, err = parseProcStat([]byte("cpu 10 0 5 80 5 0 0\ncpu0 10 0 5 80 5 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (machineSample{busy: 15, total: 100, cpus: 1}); got != want {
		t.Fatalf("old kernel: parseProcStat = %+v, want %+v", got, want)
	}

	for name, bad := range map[string]string{
		"no cpu line":      "cpu0 1 2 3 4\nintr 5\n",
		"no per-CPU lines": "cpu 1 2 3 4 5\n",
		"too few fields":   "cpu 1 2 3\ncpu0 1 2 3\n",
		"not a number":     "cpu 1 2 x 4 5\ncpu0 1 2 3 4 5\n",
	} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestMachineCPU(t *testing.T) {
	first := machineSample{busy: 10_000, total: 50_000, cpus: 2}
	// 1,000 ticks passed over both CPUs (5 s of wall time at 100 ticks/s each), 945 of them
	// busy: 1.89 cores.
	last := machineSample{busy: 10_945, total: 51_000, cpus: 2}
	server := &ProcReport{CPUCores: 0.59}
	generator := &ProcReport{CPUCores: 0.23}
	m := machineCPU(first, last, server, generator)
	if m.Error != "" || m.CPUs != 2 || m.BusyCores != 1.89 || m.OtherCores != 1.07 {
		t.Fatalf("machineCPU = %+v, want 1.89 of 2 busy, 1.07 other", m)
	}
	const line = "1.89 of 2 cores busy (server 0.59, generator 0.23, everything else 1.07)"
	if got := machineLine(m, server, generator); got != line {
		t.Errorf("machineLine = %q, want %q", got, line)
	}

	// A server that was not watched or not measured is neither subtracted nor shown.
	m = machineCPU(first, last, &ProcReport{Error: "gone"}, generator)
	if m.OtherCores != 1.66 {
		t.Errorf("other with the server unmeasured = %g, want 1.66", m.OtherCores)
	}
	if got, want := machineLine(m, nil, generator), "1.89 of 2 cores busy (generator 0.23, everything else 1.66)"; got != want {
		t.Errorf("machineLine = %q, want %q", got, want)
	}

	if m := machineCPU(first, first, server, generator); m.Error == "" {
		t.Errorf("no ticks passed, yet %+v", m)
	}
}

// TestWatchMachine reads the real /proc/stat where it exists.
func TestWatchMachine(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	w := watchMachine()
	deadline := time.Now().Add(100 * time.Millisecond)
	for time.Now().Before(deadline) { // keep a core busy so that ticks pass
	}
	m := w.stop(nil, nil)
	if m.Error != "" || m.CPUs < 1 || m.BusyCores < 0 || m.BusyCores > float64(m.CPUs) || m.OtherCores != m.BusyCores {
		t.Fatalf("watch of the machine: %+v", m)
	}
}
