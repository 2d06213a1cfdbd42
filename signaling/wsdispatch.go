package signaling

import (
	"encoding/json"
	"errors"
	"time"
)

// errorMessages are the texts of error messages, fixed per code: they never echo input.
var errorMessages = map[string]string{
	ErrCodeNotAdmitted:   "you are in the waiting room: nothing is relayed until a host admits you",
	ErrCodeNoSuchPeer:    "no such participant",
	ErrCodeNotAllowed:    "not allowed for your role",
	ErrCodeRoomFull:      "the room is full",
	ErrCodeUndeliverable: "the participant is reconnecting and cannot take more messages",
	ErrCodeUnavailable:   "the server cannot do this now: try again in a moment",
}

// handle acts on one client message.
func (c *wsConn) handle(data []byte) {
	m, err := decodeMessage(data)
	if err != nil {
		c.sendError(ErrCodeBadMessage, err.Error(), "", "")
		return
	}
	switch {
	case m.Type == TypePing:
		c.push(item{raw: []byte(`{"type":"pong"}`)})
		return
	case relayed(m.Type):
		r := Relayed{Type: m.Type, Candidate: m.Candidate}
		if m.SDP != nil {
			r.SDP = *m.SDP
		}
		err = c.sess.Relay(c.ctx, m.To, r)
		if err == nil && c.h.cfg.Metrics != nil {
			c.h.cfg.Metrics.roomRelayed.WithLabelValues(m.Type).Inc()
		}
	case m.Type == TypeAdmit:
		err = c.sess.Admit(c.ctx, m.ID)
	case m.Type == TypeDeny:
		err = c.sess.Deny(c.ctx, m.ID)
	case m.Type == TypeReturn:
		err = c.sess.Return(c.ctx, m.ID)
	case m.Type == TypeName:
		err = c.sess.SetName(c.ctx, *m.Name)
	case m.Type == TypeEnd:
		err = c.sess.End(c.ctx)
	}
	switch {
	case err == nil, errors.Is(err, ErrStale): // a taken-over connection is about to close
	default:
		to := m.To
		if m.ID != "" {
			to = m.ID
		}
		code := errorCode(err)
		c.sendError(code, errorMessages[code], m.Type, to)
	}
}

// sendError queues an error message (the connection stays open) and counts it.
func (c *wsConn) sendError(code, msg, ref, to string) {
	if c.h.cfg.Metrics != nil {
		c.h.cfg.Metrics.roomRefused.WithLabelValues(code).Inc()
	}
	if code != ErrCodeUndeliverable && code != ErrCodeNoSuchPeer {
		to = "" // echo only ids the sender may know
	}
	data, _ := json.Marshal(errorWire{Type: TypeError, Code: code, Message: msg, Ref: ref, To: to})
	c.push(item{raw: data})
}

// encode renders a queued item for the wire; nil means nothing to write.
func (c *wsConn) encode(it item) ([]byte, error) {
	ev := it.ev
	switch {
	case it.refresh:
		if !c.admitted {
			return nil, nil
		}
		servers, expires := c.issue()
		return json.Marshal(iceServersWire{Type: TypeICEServers, ICEServers: servers, ICEServersExpireAt: expires})
	case ev.Type == typeRelayed:
		return ev.Data, nil
	case ev.Type == TypeWelcome:
		return c.welcome(ev.Joined)
	case ev.Type == TypeAdmitted:
		c.admitted = true
		servers, expires := c.issue()
		return json.Marshal(admittedWire{Type: TypeAdmitted, Peers: nonNil(ev.Peers), ICEServers: servers, ICEServersExpireAt: expires})
	case ev.Type == TypeReturned:
		c.admitted = false
		c.disarmRefresh()
		return json.Marshal(struct {
			Type string `json:"type"`
		}{TypeReturned})
	case ev.Type == TypeDenied || ev.Type == TypeEnded:
		return json.Marshal(struct {
			Type string `json:"type"`
		}{ev.Type})
	case ev.Type == "":
		return nil, nil
	}
	return json.Marshal(peerWire{Type: ev.Type, ID: ev.Peer.ID, Role: ev.Peer.Role, Name: ev.Peer.Name, Reason: ev.Reason})
}

func (c *wsConn) welcome(j *Joined) ([]byte, error) {
	c.you, c.admitted = j.ID, !j.Waiting
	w := welcomeWire{Type: TypeWelcome, Protocol: Protocol, You: j.ID, Role: j.Role, Name: j.Name,
		State: StateAdmitted, Reconnected: j.Reconnected, Peers: nonNil(j.Peers),
		ValidUntil: j.ValidUntil.UTC().Format(time.RFC3339), MaxMessageBytes: c.cfg.MaxMessageBytes}
	if j.Waiting {
		w.State, w.Peers = StateWaiting, []PeerInfo{}
	} else {
		w.ICEServers, w.ICEServersExpireAt = c.issue()
	}
	return json.Marshal(w)
}

// issue mints fresh TURN credentials for this participant (user id: its room id) and
// schedules the next ice-servers push.
func (c *wsConn) issue() ([]ICEServer, string) {
	conf, cred, err := c.h.iceConfig(c.you, c.cfg.CredentialTTL, c.h.relayURLs("", c.room))
	if err != nil {
		c.cfg.Logger.Warn("no TURN credentials for a room participant", "err", err)
		return []ICEServer{}, ""
	}
	c.armRefresh(cred.Expires)
	return conf.ICEServers, conf.ExpiresAt
}

func nonNil(p []PeerInfo) []PeerInfo {
	if p == nil {
		return []PeerInfo{}
	}
	return p
}
