package main

import (
	"fmt"
	"testing"

	"github.com/miekg/dns"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type fakeAPI struct {
	svcs []*v1.Service
	eps  []*v1.Endpoints
}

func (f fakeAPI) Service(ns, name string) (*v1.Service, bool) {
	for _, s := range f.svcs {
		if s.Namespace == ns && s.Name == name {
			return s, true
		}
	}
	return nil, false
}

func (f fakeAPI) Endpoints(ns, name string) (*v1.Endpoints, bool) {
	for _, e := range f.eps {
		if e.Namespace == ns && e.Name == name {
			return e, true
		}
	}
	return nil, false
}

func (f fakeAPI) Services() []*v1.Service       { return f.svcs }
func (f fakeAPI) EndpointsAll() []*v1.Endpoints { return f.eps }

func svc(ns, name, clusterIP string, ports ...v1.ServicePort) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: clusterIP, Ports: ports},
	}
}

func fixture() *resolver {
	http := v1.ServicePort{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}
	ext := svc("t", "ext", "")
	ext.Spec.Type = v1.ServiceTypeExternalName
	ext.Spec.ExternalName = "Foo.Example.com"
	inzone := svc("t", "alias", "")
	inzone.Spec.Type = v1.ServiceTypeExternalName
	inzone.Spec.ExternalName = "web.t.svc.cluster.local"
	api := fakeAPI{
		svcs: []*v1.Service{
			svc("default", "kubernetes", "10.96.0.1", v1.ServicePort{Name: "https", Protocol: v1.ProtocolTCP, Port: 443}),
			svc("t", "web", "10.96.3.4", http, v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53}),
			svc("t", "hl", v1.ClusterIPNone, http),
			ext, inzone,
		},
		eps: []*v1.Endpoints{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: "hl"},
			Subsets: []v1.EndpointSubset{{
				Addresses: []v1.EndpointAddress{
					{IP: "10.244.1.5", Hostname: "querier"},
					{IP: "10.244.2.7"},
				},
				NotReadyAddresses: []v1.EndpointAddress{{IP: "10.244.3.9"}},
				Ports:             []v1.EndpointPort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 8080}},
			}},
		}},
	}
	return &resolver{zone: "cluster.local.", ttl: 5, api: api}
}

func ask(r *resolver, name string, t uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, t)
	return r.answer(q, true)
}

// rrs renders the answer section without TTLs and headers' noise.
func rrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, fmt.Sprintf("A %s", v.A))
		case *dns.CNAME:
			out = append(out, "CNAME "+v.Target)
		case *dns.SRV:
			out = append(out, fmt.Sprintf("SRV %d %d %s", v.Weight, v.Port, v.Target))
		case *dns.PTR:
			out = append(out, "PTR "+v.Ptr)
		default:
			out = append(out, rr.String())
		}
	}
	return out
}

func TestRecords(t *testing.T) {
	r := fixture()
	cases := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"kubernetes.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.96.0.1"}},
		{"KUBERNETES.Default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.96.0.1"}},
		// What a pod's search list tries first for "kubernetes.default":
		// it must be NXDOMAIN for the resolver to go on.
		{"kubernetes.default.t.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"kubernetes.default.svc.cluster.local.", dns.TypeAAAA, dns.RcodeSuccess, nil},
		{"nope.default.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"hl.t.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.1.5", "A 10.244.2.7"}},
		{"querier.hl.t.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.1.5"}},
		{"10-244-2-7.hl.t.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.2.7"}},
		{"10-244-3-9.hl.t.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"querier.web.t.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"_http._tcp.web.t.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 100 80 web.t.svc.cluster.local."}},
		{"_dns._udp.web.t.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 100 53 web.t.svc.cluster.local."}},
		{"_dns._tcp.web.t.svc.cluster.local.", dns.TypeSRV, dns.RcodeNameError, nil},
		{"_http._tcp.hl.t.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess, []string{
			"SRV 50 8080 querier.hl.t.svc.cluster.local.", "SRV 50 8080 10-244-2-7.hl.t.svc.cluster.local."}},
		{"ext.t.svc.cluster.local.", dns.TypeCNAME, dns.RcodeSuccess, []string{"CNAME foo.example.com."}},
		{"ext.t.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"CNAME foo.example.com."}},
		{"alias.t.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"CNAME web.t.svc.cluster.local.", "A 10.96.3.4"}},
		{"10-244-1-5.t.pod.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.1.5"}},
		{"10-244-1.t.pod.cluster.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"4.3.96.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, []string{"PTR web.t.svc.cluster.local."}},
		{"5.1.244.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, []string{"PTR querier.hl.t.svc.cluster.local."}},
		{"9.9.9.9.in-addr.arpa.", dns.TypePTR, dns.RcodeNameError, nil},
		{"t.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, nil},
		{"absent.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, nil},
		{"x.y.cluster.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"example.com.", dns.TypeA, dns.RcodeRefused, nil},
	}
	for _, c := range cases {
		m := ask(r, c.name, c.qtype)
		if m.Rcode != c.rcode {
			t.Errorf("%s %s: rcode %s, want %s", c.name, dns.TypeToString[c.qtype], dns.RcodeToString[m.Rcode], dns.RcodeToString[c.rcode])
		}
		if got := rrs(m); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s %s: answer %v, want %v", c.name, dns.TypeToString[c.qtype], got, c.want)
		}
		if c.rcode != dns.RcodeRefused && !m.Authoritative {
			t.Errorf("%s: not authoritative", c.name)
		}
		if c.rcode != dns.RcodeRefused && len(m.Answer) == 0 && len(m.Ns) != 1 {
			t.Errorf("%s: negative answer without SOA", c.name)
		}
	}
}

// A headless Service with more endpoints than fit in 512 bytes is cut and
// flagged so that the client retries over TCP.
func TestTruncation(t *testing.T) {
	r := fixture()
	api := r.api.(fakeAPI)
	ep := api.eps[0].DeepCopy()
	ep.Subsets[0].Addresses = nil
	for i := 0; i < 100; i++ {
		ep.Subsets[0].Addresses = append(ep.Subsets[0].Addresses, v1.EndpointAddress{IP: fmt.Sprintf("10.244.%d.%d", i/250, i%250+1)})
	}
	api.eps = []*v1.Endpoints{ep}
	r.api = api
	q := new(dns.Msg)
	q.SetQuestion("hl.t.svc.cluster.local.", dns.TypeA)
	udp := r.answer(q, true)
	if !udp.Truncated || udp.Len() > dns.MinMsgSize {
		t.Fatalf("udp: truncated=%v len=%d", udp.Truncated, udp.Len())
	}
	tcp := r.answer(q, false)
	if tcp.Truncated || len(tcp.Answer) != 100 {
		t.Fatalf("tcp: truncated=%v answers=%d", tcp.Truncated, len(tcp.Answer))
	}
}
