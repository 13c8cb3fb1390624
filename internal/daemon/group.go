package daemon

import (
	"context"
	"sync"
)

// group runs a set of actors, oklog/run style: each actor is an execute
// function that runs until its interrupt function makes it return. run
// starts every actor and, as soon as one returns, stops them all in the
// order they were added: each is interrupted and waited for before the
// next, so that an actor stops only once the ones added before it have
// (the daemon adds what takes requests first and the host last). run
// returns once every actor has returned, with the first error one
// returned (nil if none did).
type group struct {
	actors []actor
}

type actor struct {
	execute   func() error
	interrupt func(error)
}

// add adds an actor. interrupt is called once, with the error (or nil) of
// the actor that returned first, also when that actor is this one; it
// must make execute return and must not wait for it (run does).
func (g *group) add(execute func() error, interrupt func(error)) {
	g.actors = append(g.actors, actor{execute, interrupt})
}

// addUntilStopped adds an actor that runs fn until its interrupt cancels
// fn's context. Should fn return before that (its work could not start,
// which it reported), the actor waits for the interrupt all the same:
// such an actor never ends the group.
func (g *group) addUntilStopped(fn func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	g.add(func() error {
		fn(ctx)
		<-ctx.Done()
		return nil
	}, func(error) { cancel() })
}

// run runs the actors until the first returns, stops them in order and
// returns the first error (see group).
func (g *group) run() error {
	if len(g.actors) == 0 {
		return nil
	}
	type result struct {
		i   int
		err error
	}
	results := make(chan result, len(g.actors))
	done := make([]chan struct{}, len(g.actors))
	var (
		mu       sync.Mutex
		firstErr error
	)
	for i, a := range g.actors {
		done[i] = make(chan struct{})
		go func() {
			err := a.execute()
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
			close(done[i])
			results <- result{i, err}
		}()
	}
	first := <-results
	for i, a := range g.actors {
		a.interrupt(first.err)
		<-done[i]
	}
	mu.Lock()
	defer mu.Unlock()
	return firstErr
}
