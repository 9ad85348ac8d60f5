package main

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestWorkersNeverWait: start returns at once even while every worker is busy, every task runs
// exactly once, and wait returns only after all of them.
func TestWorkersNeverWait(t *testing.T) {
	const n = 200
	release := make(chan struct{})
	var ran [n]atomic.Int32
	var finished atomic.Int32
	w := newWorkers(func(i int) {
		<-release
		ran[i].Add(1)
		finished.Add(1)
	})
	done := make(chan struct{})
	go func() {
		for i := range n {
			w.start(i) // every worker so far is blocked
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("start waited for a busy worker")
	}
	close(release)
	w.wait()
	if got := finished.Load(); got != n {
		t.Fatalf("wait returned after %d of %d tasks", got, n)
	}
	for i := range n {
		if got := ran[i].Load(); got != 1 {
			t.Fatalf("task %d ran %d times", i, got)
		}
	}
}

// TestWorkersAreReused: tasks started one after another, each once the last has finished, run
// on one goroutine instead of one each.
func TestWorkersAreReused(t *testing.T) {
	finished := make(chan struct{})
	w := newWorkers(func(int) { finished <- struct{}{} })
	const n = 50
	for i := range n {
		w.start(i)
		<-finished
		time.Sleep(time.Millisecond) // the worker goes back to waiting for a task
	}
	w.wait()
	// One would do; a few allow for a worker the scheduler had not run again within the
	// millisecond on a busy machine.
	if got := w.spawned.Load(); got > 5 {
		t.Fatalf("%d tasks, one at a time, started %d goroutines", n, got)
	}
}
