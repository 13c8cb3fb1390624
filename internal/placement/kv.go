package placement

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The key-value buckets of the cluster on the bus (JetStream streams
// KV_<bucket>), shared by every box.
const (
	// BoxesBucket holds one key per live box, put with a TTL and put
	// again before it runs out: the server expires the key of a box
	// that stops, which is how the other boxes learn that it is gone.
	BoxesBucket = "MM_boxes"
	// LeasesBucket holds one key per placed task that a box holds: the
	// box and epoch, put with a TTL and renewed by a conditional write.
	LeasesBucket = "MM_leases"
	// StateBucket holds each placed task's Checkpoint, written only by
	// conditional writes: the fence against a box that lost the task.
	StateBucket = "MM_state"
)

// markerTTL is how long an expired key's delete marker stays in a bucket
// (watchers see the marker when the key expires).
const markerTTL = time.Minute

// buckets are the cluster's three key-value buckets.
type buckets struct {
	boxes, leases, state jetstream.KeyValue
}

// openBuckets opens the buckets, creating those that do not exist yet
// with replicas copies. An existing bucket keeps its config.
func openBuckets(ctx context.Context, js jetstream.JetStream, replicas int) (*buckets, error) {
	if replicas <= 0 {
		replicas = 1
	}
	var b buckets
	for _, c := range []struct {
		kv  *jetstream.KeyValue
		cfg jetstream.KeyValueConfig
	}{
		{&b.boxes, jetstream.KeyValueConfig{Bucket: BoxesBucket, Description: "MultiModule: live boxes", History: 1, Replicas: replicas, LimitMarkerTTL: markerTTL}},
		{&b.leases, jetstream.KeyValueConfig{Bucket: LeasesBucket, Description: "MultiModule: leases of placed tasks", History: 1, Replicas: replicas, LimitMarkerTTL: markerTTL}},
		{&b.state, jetstream.KeyValueConfig{Bucket: StateBucket, Description: "MultiModule: checkpoints of placed tasks", History: 1, Replicas: replicas}},
	} {
		kv, err := openBucket(ctx, js, c.cfg)
		if err != nil {
			return nil, err
		}
		*c.kv = kv
	}
	return &b, nil
}

func openBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	for {
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		if err == nil {
			return kv, nil
		}
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("placement: open bucket %s: %w", cfg.Bucket, err)
		}
		kv, err = js.CreateKeyValue(ctx, cfg)
		if err == nil {
			return kv, nil
		}
		if !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("placement: create bucket %s (%d replicas): %w", cfg.Bucket, cfg.Replicas, err)
		}
		// Another box created it meanwhile: open that one.
	}
}

// subject is the subject a bucket's key is written to (the bucket's
// puts go there; a direct publish there is how a write carries a TTL and
// a revision check at once).
func subject(bucket, key string) string { return "$KV." + bucket + "." + key }

// validKey reports whether s can be a key of a bucket: task and box
// names are (letters, digits, '_', '-', '.'), except with a '.' at an
// end.
func validKey(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '=' || c == '/') {
			return false
		}
	}
	return true
}

// wrongRevision reports whether err is a conditional write's refusal:
// the key's last revision is not the one expected.
func wrongRevision(err error) bool {
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
