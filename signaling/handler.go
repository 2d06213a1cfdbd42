// Package signaling is Ferry's HTTP add-on: it hands web apps ready-to-use ICE servers with
// short-lived TURN credentials, runs consultation rooms over WebSocket (ferry.v1), and
// reports health.
package signaling

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/metrics"
	"github.com/ferryrelay/ferry/signaling/web"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Defaults for Config's zero values.
const (
	DefaultTTL          = 12 * time.Hour
	DefaultRatePerKey   = 10 // requests per second per API key
	DefaultBurstPerKey  = 20
	DefaultMaxBodyBytes = 16 << 10
)

// APIKey is a configured API key: a name (for operators) and the SHA-256 of the key.
type APIKey struct {
	Name   string
	SHA256 [32]byte
}

// apiKeyPrefix marks Ferry API keys, so a leaked one is recognisable in code and logs.
const apiKeyPrefix = "fk_"

// NewAPIKey returns a fresh random API key ("fk_" and 43 base64url characters, 256 bits)
// and its SHA-256 as configured in api.keys.
func NewAPIKey() (key string, sum [32]byte, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", sum, err
	}
	key = apiKeyPrefix + base64.RawURLEncoding.EncodeToString(b)
	return key, sha256.Sum256([]byte(key)), nil
}

// ParseAPIKeyHash parses the hex SHA-256 of an API key.
func ParseAPIKeyHash(s string) ([32]byte, error) {
	var sum [32]byte
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != 32 {
		return sum, errors.New("not a hex SHA-256 (64 hex digits)")
	}
	copy(sum[:], b)
	return sum, nil
}

// AccessRecord is one signaling HTTP request, for the access log (the allocation log's
// 48-hour store). It holds personal data and never goes to the process log.
type AccessRecord struct {
	Time      time.Time
	ClientIP  netip.Addr // after trusted X-Forwarded-For
	Route     string     // the bounded route label, e.g. "/v1/ice-servers"
	Status    int
	UserAgent string
}

// AccessSink receives access records. It must not block.
type AccessSink interface{ HTTPRequest(AccessRecord) }

// Metrics are the signaling collectors; create them once per registry.
type Metrics struct {
	requests     *prometheus.CounterVec
	issued       prometheus.Counter
	roomsCreated prometheus.Counter
	roomConns    prometheus.Gauge
	roomCloses   *prometheus.CounterVec
	roomRelayed  *prometheus.CounterVec
	roomRefused  *prometheus.CounterVec
}

// NewMetrics registers ferry_http_requests_total{route,code}, ferry_credentials_issued_total
// and the room connection metrics (ferry_room_*) on reg. No label ever holds a room, a
// participant or an address.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_http_requests_total",
			Help: "Signaling HTTP requests, by route and status code.",
		}, []string{"route", "code"}),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_credentials_issued_total",
			Help: "TURN credentials issued: /v1/ice-servers and the ICE servers of room participants.",
		}),
		roomsCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_rooms_created_total",
			Help: "Rooms created through POST /v1/rooms.",
		}),
		roomConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_room_connections_active",
			Help: "Room WebSocket connections joined to a room now.",
		}),
		roomCloses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_room_connections_closed_total",
			Help: "Room WebSocket connections ended or refused, by reason (README, Close codes).",
		}, []string{"reason"}),
		roomRelayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_room_messages_relayed_total",
			Help: "Messages relayed between room participants, by type.",
		}, []string{"type"}),
		roomRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_room_messages_refused_total",
			Help: "Room messages answered with an error, by error code.",
		}, []string{"code"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.issued, m.roomsCreated, m.roomConns,
		m.roomCloses, m.roomRelayed, m.roomRefused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("signaling: metrics: %w", err)
		}
	}
	for _, r := range []string{"/v1/ice-servers", "/healthz", "/readyz"} {
		m.requests.WithLabelValues(r, "200")
	}
	for _, l := range closeLabels {
		m.roomCloses.WithLabelValues(l)
	}
	for _, t := range []string{TypeOffer, TypeAnswer, TypeCandidate, TypeRestart, TypeBye} {
		m.roomRelayed.WithLabelValues(t)
	}
	return m, nil
}

// Config configures the signaling handler.
type Config struct {
	// Auth issues the TURN credentials. Required.
	Auth *auth.Authenticator
	// URLs are the ICE server URLs of the running listeners (see BuildURLs), or the
	// configured ones; with Relays, the fallback.
	URLs []URL
	// Relays, if not nil, picks the relay whose URLs each answer hands out (a cluster's
	// registry); when it cannot pick, answers carry URLs.
	Relays RelayPicker
	// DefaultTTL is the credential lifetime when a request names none; requests are capped
	// at Auth.MaxTTL(). Zero means DefaultTTL.
	DefaultTTL time.Duration
	// APIKeys may call /v1/ice-servers. Without keys every call gets 401. SetAPIKeys
	// replaces them while the handler runs.
	APIKeys []APIKey
	// RatePerKey (requests per second) and BurstPerKey limit each API key; zero means the
	// defaults, a negative rate no limit.
	RatePerKey  float64
	BurstPerKey int
	// AllowedOrigins may call from a browser (CORS); exact origins such as
	// "https://app.clinic.example". Never a wildcard: the API key is a credential.
	AllowedOrigins []string
	// TrustedProxies are the reverse proxies whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// MaxBodyBytes bounds a request body (413 beyond). Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Ready reports whether Ferry takes new work (for /readyz), and why not; nil means
	// always.
	Ready metrics.Readiness
	// Metrics, if not nil, count requests and issued credentials.
	Metrics *Metrics
	// Access, if not nil, receives one record per request.
	Access AccessSink
	// Now is the clock; nil means time.Now (or Rooms.Clock when rooms are on).
	Now func() time.Time
	// Rooms, if not nil, turns on consultation rooms: POST /v1/rooms,
	// GET /v1/rooms/{room}/ws, GET /v1/rooms/{room}/ice-servers and (with Rooms.Page) the
	// consultation page at /r/{room}.
	Rooms *RoomsConfig
	// Check, if not nil, turns on the connection check page: GET /check,
	// GET /v1/check/ice-servers and POST /v1/check-links.
	Check *CheckConfig
}

// Handler is the signaling HTTP handler. Close it to end the room connections.
type Handler struct {
	cfg     Config
	now     func() time.Time
	mux     *http.ServeMux
	mu      sync.Mutex
	limits  map[string]*rate.Limiter
	origins map[string]bool
	hub     wsHub
	closed  sync.Once
	keys    atomic.Pointer[[]APIKey] // never changed once stored: SetAPIKeys replaces it
	// draining refuses new rooms (SetDraining).
	draining atomic.Bool
}

// NewHandler returns the signaling HTTP handler: GET/POST /v1/ice-servers, /healthz,
// /readyz, and with cfg.Rooms POST /v1/rooms and GET /v1/rooms/{room}/ws. Errors are JSON
// {"error":{"code","message"}}; nothing about a request is logged.
func NewHandler(cfg Config) *Handler {
	cfg.DefaultTTL = cmp.Or(cfg.DefaultTTL, DefaultTTL)
	cfg.RatePerKey = cmp.Or(cfg.RatePerKey, DefaultRatePerKey)
	cfg.BurstPerKey = cmp.Or(cfg.BurstPerKey, DefaultBurstPerKey)
	cfg.MaxBodyBytes = cmp.Or(cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	h := &Handler{cfg: cfg, now: cfg.Now, limits: map[string]*rate.Limiter{}, origins: map[string]bool{},
		hub: wsHub{conns: map[*wsConn]struct{}{}, perIP: map[netip.Addr]int{}}}
	if cfg.Rooms != nil {
		rc := *cfg.Rooms
		rc.defaults()
		h.cfg.Rooms = &rc
		if h.now == nil {
			h.now = rc.Clock.Now
		}
	}
	if h.now == nil {
		h.now = time.Now
	}
	for _, o := range cfg.AllowedOrigins {
		h.origins[o] = true
	}
	h.SetAPIKeys(cfg.APIKeys)
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("/v1/ice-servers", h.iceServers)
	if h.cfg.Rooms != nil {
		h.mux.HandleFunc("/v1/rooms", h.createRoom)
		h.mux.HandleFunc("GET /v1/rooms/{room}/ws", h.serveRoomWS)
		h.pageRoutes(h.cfg.Rooms.Page)
	}
	if h.cfg.Check != nil {
		h.checkRoutes(h.cfg.Check)
	}
	if p := h.page(); p != nil {
		h.mux.HandleFunc("GET "+web.AssetPrefix, p.ServeAsset)
	}
	h.mux.Handle("/healthz", metrics.HealthHandler())
	h.mux.Handle("/readyz", metrics.ReadyHandler(cfg.Ready))
	h.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
	})
	return h
}

// SetAPIKeys replaces the API keys (a configuration reload): requests from then on are
// checked against keys; a removed key gets 401 at its next request.
func (h *Handler) SetAPIKeys(keys []APIKey) {
	k := slices.Clone(keys)
	h.keys.Store(&k)
}

// SetDraining turns draining on or off. While draining, POST /v1/rooms answers 503 (code
// "draining", with Retry-After) and a room connection for a room this server does not hold
// is refused with CloseDraining; rooms already held go on: joins, reconnects and relaying.
// /v1/ice-servers keeps answering (running calls may ask for fresh credentials).
func (h *Handler) SetDraining(on bool) { h.draining.Store(on) }

// Close ends every room connection (close code 1001), waits for their goroutines, and
// closes the rooms. Idempotent.
func (h *Handler) Close() error {
	var err error
	h.closed.Do(func() {
		h.hub.close()
		if h.cfg.Rooms != nil {
			err = h.cfg.Rooms.Rooms.Close()
		}
	})
	return err
}

// routeLabel bounds the route label of metrics and access records: never a room id.
func routeLabel(path string) string {
	switch path {
	case "/v1/ice-servers", "/healthz", "/readyz", "/v1/rooms", "/check", "/v1/check/ice-servers", "/v1/check-links":
		return path
	}
	if strings.HasPrefix(path, "/v1/rooms/") && strings.HasSuffix(path, "/ws") {
		return "/v1/rooms/ws"
	}
	if strings.HasPrefix(path, "/v1/rooms/") && strings.HasSuffix(path, "/ice-servers") {
		return "/v1/rooms/ice-servers"
	}
	if strings.HasPrefix(path, "/r/") {
		return "/r"
	}
	if strings.HasPrefix(path, "/assets/") {
		return "/assets"
	}
	return "other"
}

func (h *Handler) gaugeConns(d float64) {
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.roomConns.Add(d)
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController and WebSocket upgrades reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	route := routeLabel(r.URL.Path)
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			writeError(sw, http.StatusInternalServerError, "internal", "internal error")
		}
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		if h.cfg.Metrics != nil {
			h.cfg.Metrics.requests.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
		}
		if h.cfg.Access != nil && !probe(route, r.URL.Path) {
			h.cfg.Access.HTTPRequest(AccessRecord{Time: h.now(), ClientIP: h.clientIP(r),
				Route: route, Status: sw.status, UserAgent: truncate(r.UserAgent(), 256)})
		}
	}()
	if h.cors(sw, r) {
		return
	}
	h.mux.ServeHTTP(sw, r)
}

// probe reports a health, readiness or metrics probe: load balancers and monitoring ask
// every few seconds, so their address and user agent are not worth keeping (nor lawful to
// keep without need) in the access records.
func probe(route, path string) bool {
	return route == "/healthz" || route == "/readyz" || path == "/metrics"
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// cors sets the CORS headers for allowed origins and answers preflight requests. It returns
// true when the request is fully answered.
func (h *Handler) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	if origin == "" {
		return false
	}
	w.Header().Add("Vary", "Origin")
	if !h.origins[origin] {
		if preflight {
			writeError(w, http.StatusForbidden, "origin_not_allowed", "this origin may not call Ferry")
			return true
		}
		return false // no CORS headers: the browser withholds the response
	}
	w.Header().Set("Access-Control-Allow-Origin", origin)
	if preflight {
		w.Header().Set("Access-Control-Allow-Methods", "GET, POST")
		w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		w.Header().Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

// clientIP is the request's source address, or the address a trusted proxy reports in
// X-Forwarded-For (the right-most entry that is not itself a trusted proxy).
func (h *Handler) clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	ip := ap.Addr().Unmap()
	if !h.trusted(ip) {
		return ip
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return ip
		}
		hop = hop.Unmap()
		if !h.trusted(hop) {
			return hop
		}
		ip = hop
	}
	return ip
}

func (h *Handler) trusted(ip netip.Addr) bool {
	for _, p := range h.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// apiKey returns the name of the key in the Authorization header, comparing against every
// configured key in constant time.
func (h *Handler) apiKey(r *http.Request) (string, bool) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	name, found := "", 0
	for _, k := range *h.keys.Load() {
		if subtle.ConstantTimeCompare(sum[:], k.SHA256[:]) == 1 {
			name, found = k.Name, 1
		}
	}
	return name, found == 1
}

// allow applies the per-key rate limit; it returns the wait until the next token when the
// request must be refused.
func (h *Handler) allow(key string) (time.Duration, bool) {
	if h.cfg.RatePerKey < 0 {
		return 0, true
	}
	h.mu.Lock()
	l, ok := h.limits[key]
	if !ok {
		l = rate.NewLimiter(rate.Limit(h.cfg.RatePerKey), h.cfg.BurstPerKey)
		h.limits[key] = l
	}
	h.mu.Unlock()
	now := h.now()
	res := l.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}

// iceRequest holds the parameters of /v1/ice-servers, from the query or a JSON body.
type iceRequest struct {
	TTL                *ttlParam `json:"ttl"`
	User               *string   `json:"user"`
	Transports         []string  `json:"transports"`
	ICETransportPolicy *string   `json:"iceTransportPolicy"`
	Region             *string   `json:"region"`
}

// restResponse is draft-uberti-behave-turn-rest-00 §2.2.
type restResponse struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	TTL      int64    `json:"ttl"`
	URIs     []string `json:"uris"`
}

// parse reads the parameters from the query string and, for POST, a JSON body (which wins).
func (h *Handler) parse(w http.ResponseWriter, r *http.Request) (iceRequest, int, error) {
	var req iceRequest
	q := r.URL.Query()
	if v, ok := q["ttl"]; ok {
		t := ttlParam(v[0])
		req.TTL = &t
	}
	if v, ok := q["user"]; ok {
		req.User = &v[0]
	}
	for _, v := range q["transports"] {
		for _, t := range strings.Split(v, ",") {
			if t != "" {
				req.Transports = append(req.Transports, t)
			}
		}
	}
	if v, ok := q["iceTransportPolicy"]; ok {
		req.ICETransportPolicy = &v[0]
	}
	if v, ok := q["region"]; ok {
		req.Region = &v[0]
	}
	if r.Method != http.MethodPost {
		return req, 0, nil
	}
	body, status, err := h.readBody(w, r)
	if err != nil || len(body) == 0 {
		return req, status, err
	}
	var b iceRequest
	if err := decodeBody(body, &b); err != nil {
		return req, http.StatusBadRequest, err
	}
	if b.TTL != nil {
		req.TTL = b.TTL
	}
	if b.User != nil {
		req.User = b.User
	}
	if b.Transports != nil {
		req.Transports = b.Transports
	}
	if b.ICETransportPolicy != nil {
		req.ICETransportPolicy = b.ICETransportPolicy
	}
	if b.Region != nil {
		req.Region = b.Region
	}
	return req, 0, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var e apiError
	e.Error.Code, e.Error.Message = code, msg
	writeJSON(w, status, e)
}

// authorize checks the API key and its rate limit, answering 401 or 429 itself.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request) bool {
	key, ok := h.apiKey(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "missing or unknown API key (Authorization: Bearer <key>)")
		return false
	}
	if wait, ok := h.allow(key); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many requests for this API key")
		return false
	}
	return true
}

// readBody reads a request body of at most MaxBodyBytes; blank bodies read as empty. On
// error it returns the status to answer (413 or 400).
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body larger than %d bytes", h.cfg.MaxBodyBytes)
		}
		return nil, http.StatusBadRequest, errors.New("cannot read the request body")
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil, 0, nil
	}
	return body, 0, nil
}

func writeBodyError(w http.ResponseWriter, status int, err error) {
	code := "bad_request"
	if status == http.StatusRequestEntityTooLarge {
		code = "payload_too_large"
	}
	writeError(w, status, code, err.Error())
}

// iceConfig issues a TURN REST credential for user, valid for ttl (capped at the
// authenticator's MaxTTL), and returns the RTCConfiguration for urls (NewRTCConfiguration).
// /v1/ice-servers and the rooms' welcome, admitted and ice-servers messages use it alike.
func (h *Handler) iceConfig(user string, ttl time.Duration, urls []URL) (RTCConfiguration, auth.Credential, error) {
	ttl = min(ttl, h.cfg.Auth.MaxTTL())
	cred, err := h.cfg.Auth.Issue(user, ttl)
	if err != nil {
		return RTCConfiguration{}, cred, err
	}
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.issued.Inc()
	}
	return NewRTCConfiguration(urls, cred), cred, nil
}
