// Package cluster is Ferry's scale-out over Redis: the registry of relays that the ICE
// endpoint picks from, rooms shared by several signaling instances, and the list of nodes
// that data-subject requests fan out to. Redis holds node entries, room ids, roles,
// admission state and counters; never an IP address of a client, a display name or SDP.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Redis keys. Every key Ferry writes starts with keyPrefix.
const (
	keyPrefix = "ferry:"
	// relayKey + node id: a relay's heartbeat entry (JSON Node), expiring after the TTL.
	relayKey = keyPrefix + "relay:"
	// relaysKey: a sorted set of relay ids scored by their entry's expiry (Unix ms), so that
	// readers list relays without SCAN.
	relaysKey = keyPrefix + "relays"
	// membersKey: a hash of node id -> JSON Member: every node that may hold allocation-log
	// records, for data-subject requests; an entry leaves once its records are purged.
	membersKey = keyPrefix + "members"
	// roomKey + room id: a room's shared state (rooms.go), expiring at the room's end.
	roomKey = keyPrefix + "room:"
	// instanceChannel + instance id: the Pub/Sub channel of a signaling instance.
	instanceChannel = keyPrefix + "instance:"
)

// Timeouts of Redis commands: short, so that a Redis outage is noticed (and fallen back
// from) quickly, and nothing user-facing waits long on it.
const (
	dialTimeout    = 2 * time.Second
	commandTimeout = time.Second
)

// NewClient returns a Redis client for url (redis:// or rediss://, no password inside) with
// password ("" for none), with short timeouts. It does not connect yet: the first command
// does, and each command reconnects as needed.
func NewClient(url, password string) (*redis.Client, error) {
	if !strings.HasPrefix(url, "redis://") && !strings.HasPrefix(url, "rediss://") {
		return nil, errors.New("cluster: the Redis URL must start with redis:// or rediss://")
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("cluster: Redis URL: %w", err)
	}
	if password != "" {
		opt.Password = password
	}
	opt.DialTimeout = dialTimeout
	opt.ReadTimeout = commandTimeout
	opt.WriteTimeout = commandTimeout
	opt.PoolTimeout = 2 * commandTimeout
	opt.MaxRetries = 1
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true // no CLIENT SETINFO: older servers log it as an error
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return redis.NewClient(opt), nil
}

// Ping checks that Redis answers, for start-up messages.
func Ping(ctx context.Context, c *redis.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 2*commandTimeout)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("cluster: Redis: %w", err)
	}
	return nil
}

// unixMilli is t in Unix milliseconds, Redis's unit for expiries.
func unixMilli(t time.Time) int64 { return t.UnixMilli() }
