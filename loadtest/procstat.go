package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/procfs"
)

// procSample is one reading of a process's counters.
type procSample struct {
	at       time.Time
	cpu      time.Duration // user + system since the process started
	rssBytes int64
}

// readProc reads pid's CPU time and resident set from /proc/<pid>/stat.
func readProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	p, err := procfs.NewProc(pid)
	if err != nil {
		return s, err
	}
	st, err := p.Stat()
	if err != nil {
		return s, err
	}
	s.cpu = time.Duration(st.CPUTime() * float64(time.Second))
	s.rssBytes = int64(st.ResidentMemory())
	return s, nil
}

// ProcReport is a process's resource use during a phase.
type ProcReport struct {
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUCores is CPU time over wall time: 1.5 means one and a half cores busy on average.
	CPUCores    float64 `json:"cpu_cores"`
	RSSStartMiB float64 `json:"rss_start_mib"`
	RSSMaxMiB   float64 `json:"rss_max_mib"`
	RSSEndMiB   float64 `json:"rss_end_mib"`
	Error       string  `json:"error,omitempty"`
}

// procWatch samples a process every second from start until stop, for the peak resident set.
type procWatch struct {
	pid    int
	first  procSample
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	maxRSS int64
	err    error
}

func watchProc(pid int) *procWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &procWatch{pid: pid, cancel: cancel, done: make(chan struct{})}
	w.first, w.err = readProc(pid)
	w.maxRSS = w.first.rssBytes
	go func() {
		defer close(w.done)
		for (realClock{}).Sleep(ctx, time.Second) {
			w.sample()
		}
	}()
	return w
}

func (w *procWatch) sample() procSample {
	s, err := readProc(w.pid)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if w.err == nil {
			w.err = err
		}
		return s
	}
	w.maxRSS = max(w.maxRSS, s.rssBytes)
	return s
}

// stop ends the sampling and reports the use since watchProc.
func (w *procWatch) stop() *ProcReport {
	w.cancel()
	<-w.done
	last := w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	rep := &ProcReport{PID: w.pid}
	if w.err != nil {
		rep.Error = w.err.Error()
		return rep
	}
	cpu := last.cpu - w.first.cpu
	wall := last.at.Sub(w.first.at)
	rep.CPUSeconds = round2(cpu.Seconds())
	if wall > 0 {
		rep.CPUCores = round2(cpu.Seconds() / wall.Seconds())
	}
	rep.RSSStartMiB = mib(w.first.rssBytes)
	rep.RSSMaxMiB = mib(w.maxRSS)
	rep.RSSEndMiB = mib(last.rssBytes)
	return rep
}

// machineSample is one reading of the whole machine's CPU counters from /proc/stat, in
// seconds summed over all CPUs.
type machineSample struct {
	busy, total float64
	cpus        int
}

// readMachine reads the machine's CPU counters.
func readMachine() (machineSample, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return machineSample{}, err
	}
	st, err := fs.Stat()
	if err != nil {
		return machineSample{}, err
	}
	return machineFrom(st)
}

// machineFrom sums the aggregate "cpu" line of /proc/stat. Busy is user + nice + system + irq +
// softirq + steal; idle and iowait are not busy. Guest time is already counted in user and
// nice, so it is left out of both sums.
func machineFrom(st procfs.Stat) (machineSample, error) {
	c := st.CPUTotal
	s := machineSample{busy: c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal, cpus: len(st.CPU)}
	s.total = s.busy + c.Idle + c.Iowait
	if s.cpus == 0 {
		return s, fmt.Errorf("/proc/stat: no per-CPU lines")
	}
	return s, nil
}

// MachineReport is the whole machine's CPU use during a phase: the server, the generator,
// PostgreSQL and whatever else runs there.
type MachineReport struct {
	CPUs int `json:"cpus"`
	// BusyCores is busy ticks over all ticks times CPUs: 1.5 means one and a half of the
	// machine's cores busy on average.
	BusyCores float64 `json:"busy_cores"`
	// OtherCores is BusyCores less the server's and the generator's CPU: PostgreSQL, the
	// kernel's work for everyone, and every other process.
	OtherCores float64 `json:"other_cores"`
	Error      string  `json:"error,omitempty"`
}

// machineWatch measures the machine's CPU from watchMachine until stop.
type machineWatch struct {
	first machineSample
	err   error
}

func watchMachine() *machineWatch {
	s, err := readMachine()
	return &machineWatch{first: s, err: err}
}

// stop reports the machine's CPU since watchMachine, less the server's and the generator's.
func (w *machineWatch) stop(server, generator *ProcReport) *MachineReport {
	if w.err != nil {
		return &MachineReport{Error: w.err.Error()}
	}
	last, err := readMachine()
	if err != nil {
		return &MachineReport{Error: err.Error()}
	}
	return machineCPU(w.first, last, server, generator)
}

// machineCPU reports the machine's CPU between two readings; server (nil when not watched) and
// generator are subtracted from it for the rest.
func machineCPU(first, last machineSample, server, generator *ProcReport) *MachineReport {
	rep := &MachineReport{CPUs: last.cpus}
	total := last.total - first.total
	if total <= 0 {
		rep.Error = "no CPU time passed"
		return rep
	}
	rep.BusyCores = round2((last.busy - first.busy) / total * float64(last.cpus))
	// From the rounded figures, so that the printed numbers add up.
	other := rep.BusyCores
	for _, p := range []*ProcReport{server, generator} {
		if p != nil && p.Error == "" {
			other -= p.CPUCores
		}
	}
	rep.OtherCores = max(round2(other), 0)
	return rep
}

func mib(b int64) float64 { return round2(float64(b) / (1 << 20)) }

func round2(f float64) float64 { return math.Round(f*100) / 100 }
