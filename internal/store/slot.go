package store

// Slot is a connected worker with room for Free more attempts: what a
// dispatcher claims jobs for (ClaimSlots).
type Slot struct {
	Worker WorkerMatch
	Free   int
}
