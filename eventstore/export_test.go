package eventstore

// HoldGroupWriters takes every group writer slot of s, so that appends queue up; release lets
// them go. Tests use it to make a group of a known size.
func HoldGroupWriters(s *Store) (release func()) {
	n := cap(s.group.slots)
	for range n {
		s.group.slots <- struct{}{}
	}
	return func() {
		for range n {
			<-s.group.slots
		}
	}
}

// QueuedAppends returns how many appends wait for a group writer.
func QueuedAppends(s *Store) int {
	s.group.mu.Lock()
	defer s.group.mu.Unlock()
	return len(s.group.queue)
}
