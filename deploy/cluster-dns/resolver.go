package main

import (
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	v1 "k8s.io/api/core/v1"
)

// resolver answers from a snapshot of Services and Endpoints. Record names
// follow https://github.com/kubernetes/dns/blob/master/docs/specification.md
// (schema version 1.1.0), IPv4 only.
type resolver struct {
	zone string // the cluster domain, lower case, fully qualified ("cluster.local.")
	ttl  uint32
	api  lister
}

const reverseZone = "in-addr.arpa."

func (r *resolver) answer(req *dns.Msg, udp bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = false
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		m.SetRcode(req, dns.RcodeNotImplemented)
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(dns.Fqdn(q.Name))
	var zone string
	var res result
	switch {
	case dns.IsSubDomain(r.zone, name):
		zone = r.zone
		res = r.cluster(name)
	case dns.IsSubDomain(reverseZone, name):
		zone = reverseZone
		res = r.reverse(name)
	default:
		// Nothing is forwarded: the lab has no upstream resolver.
		m.SetRcode(req, dns.RcodeRefused)
		return m
	}
	m.Authoritative = true
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.SetRcode(req, dns.RcodeRefused)
		return m
	}
	if !res.exists {
		m.Rcode = dns.RcodeNameError
	}
	for _, rr := range res.answer {
		t := rr.Header().Rrtype
		if t == q.Qtype || q.Qtype == dns.TypeANY || t == dns.TypeCNAME {
			m.Answer = append(m.Answer, rr)
		}
	}
	if len(m.Answer) > 0 {
		m.Extra = res.extra
		// A CNAME into the cluster domain is followed once, as a resolver
		// would, so that one round trip gives the address.
		for _, rr := range m.Answer {
			if c, ok := rr.(*dns.CNAME); ok && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY) && dns.IsSubDomain(r.zone, c.Target) {
				for _, t := range r.cluster(c.Target).answer {
					if t.Header().Rrtype == dns.TypeA {
						m.Answer = append(m.Answer, t)
					}
				}
			}
		}
	} else {
		m.Ns = []dns.RR{r.soa(zone)}
	}

	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		if int(opt.UDPSize()) > size {
			size = int(opt.UDPSize())
		}
		m.SetEdns0(uint16(size), false)
	}
	if udp && m.Len() > size {
		m.Extra = nil
		if opt := req.IsEdns0(); opt != nil {
			m.SetEdns0(uint16(size), false)
		}
		for len(m.Answer) > 0 && m.Len() > size {
			m.Answer = m.Answer[:len(m.Answer)-1]
			m.Truncated = true
		}
	}
	return m
}

// result is every record of one name (all types), the additional records
// that go with them, and whether the name exists at all (NODATA vs
// NXDOMAIN).
type result struct {
	answer []dns.RR
	extra  []dns.RR
	exists bool
}

func (r *resolver) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: r.ttl}
}

func (r *resolver) a(name string, ip net.IP) dns.RR {
	return &dns.A{Hdr: r.hdr(name, dns.TypeA), A: ip}
}

func (r *resolver) soa(zone string) dns.RR {
	return &dns.SOA{
		Hdr:     r.hdr(zone, dns.TypeSOA),
		Ns:      "ns.dns." + r.zone,
		Mbox:    "hostmaster." + r.zone,
		Serial:  uint32(time.Now().Unix()),
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  r.ttl,
	}
}

// cluster resolves a name inside the cluster domain.
func (r *resolver) cluster(name string) result {
	rest := strings.TrimSuffix(strings.TrimSuffix(name, r.zone), ".")
	if rest == "" {
		return result{answer: []dns.RR{r.soa(r.zone)}, exists: true}
	}
	labels := strings.Split(rest, ".")
	last := len(labels) - 1
	switch labels[last] {
	case "svc":
		return r.service(name, labels[:last])
	case "pod":
		return r.pod(name, labels[:last])
	}
	return result{}
}

// service resolves <...>.svc.<zone>; l are the labels before "svc".
func (r *resolver) service(name string, l []string) result {
	switch len(l) {
	case 0:
		return result{exists: true} // svc.<zone>: an empty non-terminal
	case 1:
		for _, s := range r.api.Services() {
			if s.Namespace == l[0] {
				return result{exists: true}
			}
		}
		return result{}
	case 2:
		return r.serviceName(name, l[0], l[1])
	case 3:
		return r.endpointName(name, l[0], l[1], l[2])
	case 4:
		if strings.HasPrefix(l[0], "_") && strings.HasPrefix(l[1], "_") {
			return r.srv(name, l[0][1:], l[1][1:], l[2], l[3])
		}
	}
	return result{}
}

func headless(s *v1.Service) bool { return s.Spec.ClusterIP == v1.ClusterIPNone }

func (r *resolver) svcFQDN(svc, ns string) string { return svc + "." + ns + ".svc." + r.zone }

// readyV4 calls f for every ready IPv4 address of a Service's Endpoints.
func (r *resolver) readyV4(ns, svc string, f func(v1.EndpointSubset, v1.EndpointAddress, net.IP)) {
	ep, ok := r.api.Endpoints(ns, svc)
	if !ok {
		return
	}
	for _, sub := range ep.Subsets {
		for _, a := range sub.Addresses {
			if ip := net.ParseIP(a.IP).To4(); ip != nil {
				f(sub, a, ip)
			}
		}
	}
}

// endpointLabel is the label an endpoint is known by under its Service: its
// hostname, or its address with dashes.
func endpointLabel(a v1.EndpointAddress, ip net.IP) string {
	if a.Hostname != "" {
		return strings.ToLower(a.Hostname)
	}
	return strings.ReplaceAll(ip.String(), ".", "-")
}

func (r *resolver) serviceName(name, svc, ns string) result {
	s, ok := r.api.Service(ns, svc)
	if !ok {
		return result{}
	}
	res := result{exists: true}
	switch {
	case s.Spec.Type == v1.ServiceTypeExternalName:
		if s.Spec.ExternalName != "" {
			res.answer = append(res.answer, &dns.CNAME{Hdr: r.hdr(name, dns.TypeCNAME), Target: dns.Fqdn(strings.ToLower(s.Spec.ExternalName))})
		}
	case headless(s):
		r.readyV4(ns, svc, func(_ v1.EndpointSubset, _ v1.EndpointAddress, ip net.IP) {
			res.answer = append(res.answer, r.a(name, ip))
		})
	default:
		if ip := net.ParseIP(s.Spec.ClusterIP).To4(); ip != nil {
			res.answer = append(res.answer, r.a(name, ip))
		}
	}
	return res
}

// endpointName resolves <hostname>.<svc>.<ns>.svc.<zone>, which exists for
// the endpoints of headless Services only.
func (r *resolver) endpointName(name, host, svc, ns string) result {
	s, ok := r.api.Service(ns, svc)
	if !ok || !headless(s) {
		return result{}
	}
	var res result
	r.readyV4(ns, svc, func(_ v1.EndpointSubset, a v1.EndpointAddress, ip net.IP) {
		if endpointLabel(a, ip) == host {
			res.answer = append(res.answer, r.a(name, ip))
			res.exists = true
		}
	})
	return res
}

// srv resolves _<port>._<proto>.<svc>.<ns>.svc.<zone>.
func (r *resolver) srv(name, port, proto, svc, ns string) result {
	s, ok := r.api.Service(ns, svc)
	if !ok {
		return result{}
	}
	var res result
	matches := func(n string, p v1.Protocol) bool {
		return n != "" && strings.ToLower(n) == port && strings.ToLower(string(p)) == proto
	}
	if headless(s) {
		r.readyV4(ns, svc, func(sub v1.EndpointSubset, a v1.EndpointAddress, ip net.IP) {
			for _, p := range sub.Ports {
				if matches(p.Name, p.Protocol) {
					target := endpointLabel(a, ip) + "." + r.svcFQDN(svc, ns)
					res.answer = append(res.answer, &dns.SRV{Hdr: r.hdr(name, dns.TypeSRV), Weight: 100, Port: uint16(p.Port), Target: target})
					res.extra = append(res.extra, r.a(target, ip))
				}
			}
		})
	} else if ip := net.ParseIP(s.Spec.ClusterIP).To4(); ip != nil {
		target := r.svcFQDN(svc, ns)
		for _, p := range s.Spec.Ports {
			if matches(p.Name, p.Protocol) {
				res.answer = append(res.answer, &dns.SRV{Hdr: r.hdr(name, dns.TypeSRV), Weight: 100, Port: uint16(p.Port), Target: target})
				res.extra = append(res.extra, r.a(target, ip))
			}
		}
	}
	if n := len(res.answer); n > 1 {
		for _, rr := range res.answer {
			rr.(*dns.SRV).Weight = uint16(100 / n)
		}
	}
	res.exists = len(res.answer) > 0
	return res
}

// pod resolves <a-b-c-d>.<ns>.pod.<zone> to a.b.c.d, for any namespace
// ("pods insecure" in CoreDNS' words, as kube-dns always did).
func (r *resolver) pod(name string, l []string) result {
	switch len(l) {
	case 0, 1:
		return result{exists: true}
	case 2:
		ip := net.ParseIP(strings.ReplaceAll(l[0], "-", ".")).To4()
		if ip == nil || strings.Count(l[0], "-") != 3 {
			return result{}
		}
		return result{answer: []dns.RR{r.a(name, ip)}, exists: true}
	}
	return result{}
}

// reverse resolves d.c.b.a.in-addr.arpa to the Services whose ClusterIP is
// a.b.c.d and the endpoints of headless Services at that address.
func (r *resolver) reverse(name string) result {
	ip := reverseIP(name)
	if ip == nil {
		return result{exists: strings.Count(name, ".") < 6} // a.in-addr.arpa. etc. are non-terminals
	}
	var res result
	ptr := func(target string) {
		res.answer = append(res.answer, &dns.PTR{Hdr: r.hdr(name, dns.TypePTR), Ptr: target})
	}
	for _, s := range r.api.Services() {
		if headless(s) {
			continue
		}
		if c := net.ParseIP(s.Spec.ClusterIP); c != nil && c.Equal(ip) {
			ptr(r.svcFQDN(s.Name, s.Namespace))
		}
	}
	for _, ep := range r.api.EndpointsAll() {
		s, ok := r.api.Service(ep.Namespace, ep.Name)
		if !ok || !headless(s) {
			continue
		}
		r.readyV4(ep.Namespace, ep.Name, func(_ v1.EndpointSubset, a v1.EndpointAddress, aip net.IP) {
			if aip.Equal(ip) {
				ptr(endpointLabel(a, aip) + "." + r.svcFQDN(ep.Name, ep.Namespace))
			}
		})
	}
	res.exists = len(res.answer) > 0
	return res
}

// reverseIP turns d.c.b.a.in-addr.arpa. into a.b.c.d, or nil.
func reverseIP(name string) net.IP {
	l := strings.Split(strings.TrimSuffix(name, "."+reverseZone), ".")
	if len(l) != 4 {
		return nil
	}
	for i := range l {
		if n, err := strconv.Atoi(l[i]); err != nil || n < 0 || n > 255 || strconv.Itoa(n) != l[i] {
			return nil
		}
	}
	return net.ParseIP(l[3] + "." + l[2] + "." + l[1] + "." + l[0]).To4()
}
