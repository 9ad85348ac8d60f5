package main

import (
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

// TestReadProcSelf reads this process's own counters, which must agree with what the kernel
// reports through getrusage: CPU time in seconds and a resident set no larger than the peak.
func TestReadProcSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); { // CPU time to measure
	}
	var before, after syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &before); err != nil {
		t.Fatal(err)
	}
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &after); err != nil {
		t.Fatal(err)
	}
	cpu := func(r syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	// /proc counts in ticks of 10 ms, and each of user and system time is cut to a tick.
	if lo, hi := cpu(before)-30*time.Millisecond, cpu(after)+10*time.Millisecond; s.cpu < lo || s.cpu > hi {
		t.Errorf("own CPU %s, want between %s and %s as getrusage says", s.cpu, lo, hi)
	}
	if peak := after.Maxrss << 10; s.rssBytes <= 0 || s.rssBytes > peak {
		t.Errorf("own resident set %d bytes, want above 0 and at most the peak %d", s.rssBytes, peak)
	}
	rep := watchProc(os.Getpid()).stop()
	if rep.Error != "" || rep.RSSMaxMiB <= 0 {
		t.Fatalf("watch of self: %+v", rep)
	}
	if rep := watchProc(-1).stop(); rep.Error == "" {
		t.Errorf("a process that does not exist was measured: %+v", rep)
	}
}

func TestMachineFrom(t *testing.T) {
	// Two CPUs; guest and guest_nice are already inside user and nice, so they must not be
	// added again.
	st := procfs.Stat{
		CPUTotal: procfs.CPUStat{User: 10, Nice: 0.2, System: 3, Idle: 50, Iowait: 4, IRQ: 0.06, SoftIRQ: 0.7, Steal: 0.08, Guest: 0.09, GuestNice: 0.1},
		CPU:      map[int64]procfs.CPUStat{0: {}, 1: {}},
	}
	got, err := machineFrom(st)
	if err != nil {
		t.Fatal(err)
	}
	busy := 10 + 0.2 + 3 + 0.06 + 0.7 + 0.08
	if want := (machineSample{busy: busy, total: busy + 50 + 4, cpus: 2}); got != want {
		t.Fatalf("machineFrom = %+v, want %+v", got, want)
	}
	if _, err := machineFrom(procfs.Stat{CPUTotal: st.CPUTotal}); err == nil {
		t.Error("a /proc/stat without per-CPU lines was read")
	}
}

func TestMachineCPU(t *testing.T) {
	first := machineSample{busy: 100, total: 500, cpus: 2}
	// 10 CPU seconds passed over both CPUs (5 s of wall time), 9.45 of them busy: 1.89 cores.
	last := machineSample{busy: 109.45, total: 510, cpus: 2}
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
