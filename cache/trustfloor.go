package cache

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
)

// The trust documents' shared rollback floor (trust.SharedFloor): one
// record, sealed like every value, kept without expiry. A record that
// does not open is no record (and is replaced by the next update): the
// floor only ever refuses, so a Redis that drops or damages it gives a
// replica no more than its own data dir gives it.

// maxFloorRetries bounds the optimistic transactions an update retries
// when other replicas update the record at the same moment, each after a
// random pause of up to a few milliseconds (the op timeout bounds them
// all).
const maxFloorRetries = 32

// LoadFloor implements trust.SharedFloor.
func (s *Shared) LoadFloor(ctx context.Context) ([]byte, error) {
	return s.get(ctx, "trust floor", s.key(kindTrust, "floor"))
}

// UpdateFloor implements trust.SharedFloor: a WATCH/MULTI transaction,
// retried while another replica's update lands in between.
func (s *Shared) UpdateFloor(ctx context.Context, update func(cur []byte) ([]byte, error)) error {
	key := s.key(kindTrust, "floor")
	return s.call(ctx, "trust floor", func(ctx context.Context) error {
		for range maxFloorRetries {
			err := s.client.Watch(ctx, func(tx *redis.Tx) error {
				var cur []byte
				sealed, err := tx.Get(ctx, key).Bytes()
				switch {
				case errors.Is(err, redis.Nil):
				case err != nil:
					return err
				default:
					if cur, err = s.box.Open(sealed, []byte(key)); err != nil {
						s.foreign("trust floor")
						cur = nil
					}
				}
				next, err := update(cur)
				if err != nil || bytes.Equal(next, cur) {
					return err
				}
				sealedNext, err := s.box.Seal(next, []byte(key))
				if err != nil {
					return err
				}
				_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
					p.Set(ctx, key, sealedNext, 0)
					return nil
				})
				return err
			}, key)
			if !errors.Is(err, redis.TxFailedErr) {
				return err
			}
			select {
			case <-time.After(time.Duration(1+rand.IntN(4000)) * time.Microsecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return errors.New("the record kept changing under other replicas' updates")
	})
}
