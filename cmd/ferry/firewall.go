package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/ferryrelay/ferry/config"
	"github.com/spf13/cobra"
)

// Need levels of a clinic's firewall rule.
const (
	needRequired    = "required"
	needRecommended = "recommended"
	needOptional    = "optional"
)

// fwRule is one thing a firewall must let through.
type fwRule struct {
	Protocol     string   `json:"protocol"`               // "udp" or "tcp"
	Destinations []string `json:"destinations,omitempty"` // addresses (and names) to allow; server rules: none (any source)
	Ports        string   `json:"ports"`                  // "443", "3478" or "49152-65535"
	Need         string   `json:"need,omitempty"`         // clinic rules: required, recommended or optional
	Purpose      string   `json:"purpose"`
}

// fwPlan is what `ferry firewall` prints: outbound rules for clinics' firewalls, inbound
// rules for the server's, and what in the configuration stands in their way.
type fwPlan struct {
	PublicHost string   `json:"publicHost,omitempty"`
	Addresses  []string `json:"addresses"` // the public (advertised or bound) addresses clients and peers use
	Clinic     []fwRule `json:"clinic"`
	Server     []fwRule `json:"server"`
	Warnings   []string `json:"warnings,omitempty"`
}

func newFirewallCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "firewall [--json]",
		Short: "Print what a clinic's firewall (and this server's) must allow for this configuration",
		Long: "Print, for this configuration, exactly what a clinic's firewall must let out for video\n" +
			"consultations through Ferry: the addresses (advertised or relay IPs, and the public host\n" +
			"name) with the listener ports per protocol and the relay port range, each marked\n" +
			"required, recommended or optional; then what this server's own firewall must let in,\n" +
			"as a table and as nftables rules. Copy it into a request to the clinic's IT department.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The rules need only the listeners, the range and the addresses: a configuration
			// whose secret or certificate files do not exist yet (IT asks before set-up) still
			// gives them, with its problems named.
			f, problems, err := opsConfig(cmd)
			if err != nil {
				return err
			}
			if problems != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: ferry serve would refuse this configuration as it stands; the rules below come from its listeners and addresses:\n%v\n", problems)
			}
			p := firewallPlan(f)
			if asJSON {
				return printJSON(cmd.OutOrStdout(), p)
			}
			return p.write(cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the rules as JSON")
	config.AddFlags(cmd.Flags())
	return cmd
}

// firewallPlan derives the rules from the configured listeners, relay range and addresses.
func firewallPlan(f *config.File) fwPlan {
	var warns []string
	bind4, bind6, adv4, adv6 := relayIPs(f, func(msg string) { warns = append(warns, msg) })
	p := fwPlan{PublicHost: f.Server.PublicHost, Warnings: warns}
	for _, pair := range [][2]netip.Addr{{bind4, adv4}, {bind6, adv6}} {
		switch {
		case pair[1].IsValid():
			p.Addresses = append(p.Addresses, pair[1].String())
		case pair[0].IsValid():
			p.Addresses = append(p.Addresses, pair[0].String())
		}
	}
	dest := slices.Clone(p.Addresses)
	if p.PublicHost != "" && !slices.Contains(dest, p.PublicHost) {
		dest = append(dest, p.PublicHost)
	}
	udp := listenPorts(f.TURN.UDPListen)
	stream := map[int][]string{} // TCP port -> what it carries
	for _, pt := range listenPorts(f.TURN.TLSListen) {
		stream[pt] = append(stream[pt], "TURN over TLS (turns:)")
	}
	for _, pt := range listenPorts(f.TURN.TCPListen) {
		stream[pt] = append(stream[pt], "TURN over TCP")
	}
	page, shared := pageRule(f, dest)
	if shared > 0 {
		stream[shared] = append(stream[shared], "the consultation page and API (HTTPS)")
	}
	reqProto, reqPort := requiredPort(f, udp, stream)
	for _, pt := range sortedKeys(stream) {
		need := needOptional
		if reqProto == "tcp" && pt == reqPort {
			need = needRequired
		}
		p.Clinic = append(p.Clinic, fwRule{Protocol: "tcp", Destinations: dest, Ports: strconv.Itoa(pt), Need: need,
			Purpose: strings.Join(stream[pt], ", ")})
	}
	for _, pt := range udp {
		need := needRecommended
		if reqProto == "udp" && pt == reqPort {
			need = needRequired
		}
		p.Clinic = append(p.Clinic, fwRule{Protocol: "udp", Destinations: dest, Ports: strconv.Itoa(pt), Need: need,
			Purpose: "TURN and STUN over UDP: the best audio and video"})
	}
	relayRange := fmt.Sprintf("%d-%d", f.Relay.PortMin, f.Relay.PortMax)
	p.Clinic = append(p.Clinic, fwRule{Protocol: "udp", Destinations: slices.Clone(p.Addresses), Ports: relayRange, Need: needOptional,
		Purpose: "relayed transport addresses: lets a browser in the clinic send straight to the other side's relay"})
	if page != nil {
		p.Clinic = append(p.Clinic, *page)
	}
	p.Server = serverRules(f, udp, stream, relayRange)
	p.Warnings = append(p.Warnings, listenerWarnings(f, stream)...)
	return p
}

// pageRule returns where browsers load the consultation page and the API from: a rule of
// its own (http.public_url on another host, or Ferry's own http.listen), or the TURN TLS
// port it shares; neither without an HTTP listener.
func pageRule(f *config.File, dest []string) (rule *fwRule, sharedPort int) {
	ports := listenPorts([]string{f.HTTP.Listen})
	if len(ports) == 0 {
		return nil, 0
	}
	scheme := "HTTP"
	if f.HTTP.TLSCertFile != "" {
		scheme = "HTTPS"
	}
	u, err := url.Parse(f.HTTP.PublicURL)
	if f.HTTP.PublicURL != "" && err == nil && u.Hostname() != f.Server.PublicHost && !slices.Contains(dest, u.Hostname()) {
		port := u.Port()
		if port == "" {
			port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
		}
		return &fwRule{Protocol: "tcp", Destinations: []string{u.Hostname()}, Ports: port, Need: needRequired,
			Purpose: "the consultation page and API (http.public_url)"}, 0
	}
	if slices.Contains(f.TURN.TLSListen, f.HTTP.Listen) {
		return nil, ports[0]
	}
	return &fwRule{Protocol: "tcp", Destinations: dest, Ports: strconv.Itoa(ports[0]), Need: needRequired,
		Purpose: "the consultation page and API (" + scheme + ")"}, 0
}

// requiredPort is the one port a call needs at least: TCP 443 when TURN listens there, else
// another TLS or TCP port, else the first UDP port.
func requiredPort(f *config.File, udp []int, stream map[int][]string) (proto string, port int) {
	if _, ok := stream[443]; ok {
		return "tcp", 443
	}
	for _, list := range [][]int{listenPorts(f.TURN.TLSListen), listenPorts(f.TURN.TCPListen)} {
		if len(list) > 0 {
			return "tcp", list[0]
		}
	}
	if len(udp) > 0 {
		return "udp", udp[0]
	}
	return "", 0
}

// serverRules are what this server's firewall (or cloud security group) must let in.
func serverRules(f *config.File, udp []int, stream map[int][]string, relayRange string) []fwRule {
	var out []fwRule
	if len(udp) > 0 {
		out = append(out, fwRule{Protocol: "udp", Ports: joinPorts(udp), Purpose: "TURN and STUN"})
	}
	tcp := sortedKeys(stream)
	var what []string
	if len(listenPorts(f.TURN.TCPListen)) > 0 {
		what = append(what, "TURN over TCP")
	}
	if len(listenPorts(f.TURN.TLSListen)) > 0 {
		what = append(what, "TURN over TLS")
	}
	if pts := listenPorts([]string{f.HTTP.Listen}); len(pts) > 0 {
		if !slices.Contains(tcp, pts[0]) {
			tcp = append(tcp, pts[0])
		}
		what = append(what, map[bool]string{true: "HTTPS", false: "HTTP"}[f.HTTP.TLSCertFile != "" || slices.Contains(f.TURN.TLSListen, f.HTTP.Listen)])
	}
	if len(tcp) > 0 {
		out = append(out, fwRule{Protocol: "tcp", Ports: joinPorts(tcp), Purpose: strings.Join(what, ", ")})
	}
	return append(out, fwRule{Protocol: "udp", Ports: relayRange, Purpose: "relayed transport addresses (one per allocation): the whole range"})
}

// listenerWarnings names listeners no clinic can reach, and a missing port 443.
func listenerWarnings(f *config.File, stream map[int][]string) []string {
	var out []string
	for _, l := range []struct {
		key   string
		addrs []string
	}{{"turn.udp_listen", f.TURN.UDPListen}, {"turn.tcp_listen", f.TURN.TCPListen}, {"turn.tls_listen", f.TURN.TLSListen}, {"http.listen", []string{f.HTTP.Listen}}} {
		for _, a := range l.addrs {
			if host, _, err := net.SplitHostPort(a); err == nil {
				if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
					out = append(out, fmt.Sprintf("%s %s listens on loopback only: no clinic can reach it", l.key, a))
				}
			}
		}
	}
	if _, ok := stream[443]; !ok {
		out = append(out, "no TURN on TCP 443: calls from networks that let only TCP 443 out fail; add \"0.0.0.0:443\" to turn.tls_listen and turn.tcp_listen")
	}
	return out
}

// listenPorts returns the distinct ports of listen addresses, in order (port 0 left out).
func listenPorts(addrs []string) []int {
	var out []int
	for _, p := range configuredPorts(addrs) {
		if p > 0 && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func sortedKeys(m map[int][]string) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func joinPorts(ports []int) string {
	var s []string
	for _, p := range ports {
		s = append(s, strconv.Itoa(p))
	}
	return strings.Join(s, ", ")
}

// write prints the plan: the clinic's table, the server's table, nftables rules, warnings.
func (p fwPlan) write(w io.Writer) error {
	name := strings.Join(p.Addresses, ", ")
	if p.PublicHost != "" {
		name = p.PublicHost + " (" + name + ")"
	}
	fmt.Fprintf(w, "# Firewall rules for Ferry at %s, printed by ferry firewall\n\n", name)
	fmt.Fprintln(w, "## A clinic's firewall: allow outbound from the clinic's network to these destinations.")
	fmt.Fprintln(w, "## The required rows alone carry calls; the recommended ones make them better.")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTOCOL\tDESTINATION\tPORTS\tNEED\tWHAT")
	for _, r := range p.Clinic {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Protocol, strings.Join(r.Destinations, ", "), r.Ports, r.Need, r.Purpose)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\n## This server's firewall: allow inbound from anywhere (behind 1:1 NAT, forward these ports unchanged)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTOCOL\tPORTS\tWHAT")
	for _, r := range p.Server {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Protocol, r.Ports, r.Purpose)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\n## The same with nftables (the admin listener stays closed)")
	fmt.Fprintln(w, "# the rules go into an input chain; on a host without one yet, first:")
	fmt.Fprintln(w, "# nft add table inet filter; nft add chain inet filter input '{ type filter hook input priority 0; }'")
	for _, proto := range []string{"udp", "tcp"} {
		var ports []string
		for _, r := range p.Server {
			if r.Protocol == proto {
				ports = append(ports, strings.Split(r.Ports, ", ")...)
			}
		}
		if len(ports) > 0 {
			fmt.Fprintf(w, "nft add rule inet filter input %s dport { %s } accept\n", proto, strings.Join(ports, ", "))
		}
	}
	for i, msg := range p.Warnings {
		if i == 0 {
			fmt.Fprintln(w, "\n## Warnings")
		}
		fmt.Fprintln(w, "- "+msg)
	}
	return nil
}
