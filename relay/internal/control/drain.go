package control

import "github.com/pion/stun/v4"

// DrainCode answers an Allocate while the server drains: 508 Insufficient Capacity. RFC 8656
// §7.4 tells a client that gets 508 (without EVEN-PORT or RESERVATION-TOKEN) to create no new
// allocation on this server for at least a minute, which is what a draining server wants: the
// client turns to its other ICE servers and does not come back while this one winds down.
// 403 would read as "not allowed" (a policy verdict on the client's request) and is what the
// peer policy answers.
const DrainCode = stun.CodeInsufficientCapacity

// SetDraining turns draining on or off. While draining, a new Allocate gets DrainCode;
// everything else goes on: Refresh, CreatePermission, ChannelBind, Connect and
// ConnectionBind on existing allocations, their retransmissions, and Binding.
func (h *Handler) SetDraining(on bool) { h.draining.Store(on) }

// Draining reports whether new allocations are refused.
func (h *Handler) Draining() bool { return h.draining.Load() }
