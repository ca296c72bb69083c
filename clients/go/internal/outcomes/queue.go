// Package outcomes sends the drop-ins' outcome reports off the caller's path: a bounded queue drained by one
// background sender. A report that cannot be queued (the queue is full) or that the service refuses is
// counted, with the last error, never lost silently.
package outcomes

import (
	"context"
	"errors"
	"sync"
	"time"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
)

// ErrQueueFull is counted when a report arrives while Capacity reports are still waiting to be sent.
var ErrQueueFull = errors.New("outcomes: queue full, report dropped")

// ErrClosed is counted when a report arrives after Close.
var ErrClosed = errors.New("outcomes: queue closed, report dropped")

// Capacity is the number of reports that may wait to be sent.
const Capacity = 256

// sendTimeout bounds one report, retries included, when Close is not waiting.
const sendTimeout = 2 * time.Second

type item struct {
	client inference.Client
	req    *pb.ReportOutcomeRequest
}

// Queue is a bounded queue of outcome reports and its sender. The zero value is not usable: call New.
type Queue struct {
	items  chan item
	done   chan struct{}
	base   context.Context // cancelled when Close has waited sendTimeout
	cancel context.CancelFunc

	mu        sync.Mutex
	cond      *sync.Cond
	waiting   int // queued or being sent
	closed    bool
	errors    uint64
	lastError error
}

// New starts the sender.
func New() *Queue {
	q := &Queue{items: make(chan item, Capacity), done: make(chan struct{})}
	q.base, q.cancel = context.WithCancel(context.Background())
	q.cond = sync.NewCond(&q.mu)
	go q.send()
	return q
}

// Report queues req for client and returns at once.
func (q *Queue) Report(client inference.Client, req *pb.ReportOutcomeRequest) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		q.failLocked(ErrClosed)
		return
	}
	select {
	case q.items <- item{client, req}:
		q.waiting++
	default:
		q.failLocked(ErrQueueFull)
	}
}

func (q *Queue) send() {
	defer close(q.done)
	for it := range q.items {
		ctx, cancel := context.WithTimeout(q.base, sendTimeout)
		_, err := it.client.ReportOutcome(ctx, it.req)
		cancel()
		q.mu.Lock()
		if err != nil {
			q.failLocked(err)
		}
		q.waiting--
		q.cond.Broadcast()
		q.mu.Unlock()
	}
}

func (q *Queue) failLocked(err error) {
	q.errors++
	q.lastError = err
}

// Errors counts the reports dropped or refused, and returns the last such error (nil when there was none).
func (q *Queue) Errors() (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.errors, q.lastError
}

// Flush waits until every report queued so far has been sent (or refused), or ctx ends.
func (q *Queue) Flush(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.waiting > 0 && ctx.Err() == nil {
		q.cond.Wait()
	}
	return ctx.Err()
}

// Close stops taking reports and waits for the sender to send those already queued, at most sendTimeout: the
// reports still waiting then fail at once (and are counted).
func (q *Queue) Close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.items)
	}
	q.mu.Unlock()
	timer := time.AfterFunc(sendTimeout, q.cancel)
	defer timer.Stop()
	<-q.done
	q.cancel()
}
