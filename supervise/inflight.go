package supervise

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// An InFlight marker tells a supervisor which message a supervised process
// was handling when it died. The process maps a small file (shared, so
// what it stores is in the page cache at once and survives its death, a
// kill -9 included) and stores one word per message before handling it and
// one after: no system call, no file write on the message path. The
// supervisor reads the file after the process has exited (ReadInFlight)
// and learns whether a message was being handled then, and which.
//
// The word packs a message position (a bus sequence below 2^48 and its
// member index in a batch below 2^14) and a state; it is stored with one
// atomic 64-bit store, so a reader never sees half of it. A second word
// counts the messages handled (End), over every process that used the
// file, so that the supervisor can tell whether a process that crashed
// had got anything done since the crash before.
type InFlight struct {
	mem     []byte
	word    *atomic.Uint64
	handled *atomic.Uint64
}

// InFlightState says what the marker word records.
type InFlightState uint8

// The marker states.
const (
	InFlightNone     InFlightState = iota // nothing handled yet
	InFlightHandling                      // the message is being handled
	InFlightDone                          // the message was handled
	InFlightRecorded                      // a supervisor has recorded the crash it was in flight at
)

const (
	inFlightMagic      = "MMINFLT1"
	inFlightSize       = 24 // magic, word, handled
	inFlightSeqBits    = 48
	inFlightMemberBits = 14
)

// OpenInFlight maps the marker file at path for the process that handles
// messages, creating it (mode 0600) if need be. A marker left by an
// earlier process is kept until Begin overwrites it.
func OpenInFlight(path string) (*InFlight, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("supervise: in-flight marker: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("supervise: in-flight marker %s: %w", path, err)
	}
	if st.Size() != inFlightSize {
		if err := writeInFlight(f, 0, 0); err != nil {
			return nil, fmt.Errorf("supervise: in-flight marker %s: %w", path, err)
		}
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, inFlightSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("supervise: in-flight marker %s: map: %w", path, err)
	}
	if string(mem[:8]) != inFlightMagic {
		copy(mem[:8], inFlightMagic)
		clear(mem[8:])
	}
	// The words are 8-byte aligned: mappings start on a page.
	return &InFlight{
		mem:     mem,
		word:    (*atomic.Uint64)(unsafe.Pointer(&mem[8])),
		handled: (*atomic.Uint64)(unsafe.Pointer(&mem[16])),
	}, nil
}

// Begin records that the message at bus sequence seq, member member of
// its bus message, is being handled. A position that does not fit the
// word records nothing in flight (a crash is then attributed to none).
func (m *InFlight) Begin(seq uint64, member int) {
	m.word.Store(packInFlight(seq, member, InFlightHandling))
}

// End records that the message of the last Begin was handled.
func (m *InFlight) End() {
	w := m.word.Load()
	m.word.Store(w&^3 | uint64(InFlightDone))
	m.handled.Store(m.handled.Load() + 1) // one writer: no atomic add needed
}

// Pass records that the message of the last Begin was dealt with without
// handling it (it was dead-lettered, or skipped): it is done, but the
// count of handled messages stays.
func (m *InFlight) Pass() {
	w := m.word.Load()
	m.word.Store(w&^3 | uint64(InFlightDone))
}

// Close unmaps the marker; what it records stays in the file.
func (m *InFlight) Close() error {
	if m.mem == nil {
		return nil
	}
	err := syscall.Munmap(m.mem)
	m.mem, m.word, m.handled = nil, nil, nil
	return err
}

// InFlightMark is what a marker file records.
type InFlightMark struct {
	State  InFlightState
	Seq    uint64 // the bus sequence of the message (0: none)
	Member int    // its index in its bus message
	// Handled counts the messages handled (End) by every process that
	// used the marker file.
	Handled uint64
}

// Handling reports whether the mark says a message was being handled.
func (k InFlightMark) Handling() bool { return k.State == InFlightHandling && k.Seq != 0 }

// ReadInFlight reads the marker file at path. A missing file is a zero
// mark (nothing in flight); a file that is not a marker is an error.
func ReadInFlight(path string) (InFlightMark, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return InFlightMark{}, nil
	}
	if err != nil {
		return InFlightMark{}, fmt.Errorf("supervise: read in-flight marker: %w", err)
	}
	if len(b) != inFlightSize || string(b[:8]) != inFlightMagic {
		return InFlightMark{}, fmt.Errorf("supervise: %s is not an in-flight marker (%d bytes)", path, len(b))
	}
	k := unpackInFlight(binary.LittleEndian.Uint64(b[8:]))
	k.Handled = binary.LittleEndian.Uint64(b[16:])
	return k, nil
}

// MarkInFlightRecorded sets the state of the marker file at path to
// InFlightRecorded, keeping the position, so a crash is recorded once. The
// process that maps it must have exited.
func MarkInFlightRecorded(path string) error {
	k, err := ReadInFlight(path)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("supervise: in-flight marker: %w", err)
	}
	err = writeInFlight(f, packInFlight(k.Seq, k.Member, InFlightRecorded), k.Handled)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("supervise: in-flight marker %s: %w", path, err)
	}
	return nil
}

func writeInFlight(f *os.File, word, handled uint64) error {
	var b [inFlightSize]byte
	copy(b[:8], inFlightMagic)
	binary.LittleEndian.PutUint64(b[8:], word)
	binary.LittleEndian.PutUint64(b[16:], handled)
	if _, err := f.WriteAt(b[:], 0); err != nil {
		return err
	}
	return f.Truncate(inFlightSize)
}

// The word: seq (48 bits) | member (14 bits) | state (2 bits).
func packInFlight(seq uint64, member int, st InFlightState) uint64 {
	if seq >= 1<<inFlightSeqBits || member < 0 || member >= 1<<inFlightMemberBits {
		return uint64(InFlightNone)
	}
	return seq<<(inFlightMemberBits+2) | uint64(member)<<2 | uint64(st)
}

func unpackInFlight(w uint64) InFlightMark {
	return InFlightMark{
		State:  InFlightState(w & 3),
		Member: int(w >> 2 & (1<<inFlightMemberBits - 1)),
		Seq:    w >> (inFlightMemberBits + 2),
	}
}
