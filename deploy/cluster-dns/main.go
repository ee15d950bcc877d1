// Command flannel-rs-lab-dns is the Kubernetes lab's cluster DNS: a small,
// authoritative server for the cluster domain that follows the Kubernetes
// DNS-based service discovery specification (Services, headless Services'
// endpoints, SRV records for named ports, ExternalName CNAMEs, pod A records,
// PTR records). It exists because Debian ships neither CoreDNS nor kube-dns
// and nothing can be downloaded here; it is built by scripts/k8s-build.sh
// --dns inside the Kubernetes 1.20.2 source tree, whose vendored
// github.com/miekg/dns and client-go it uses. It is a lab component, not a
// production DNS: it forwards nothing (names outside the cluster domain and
// its reverse zones are REFUSED) and serves only IPv4.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// lister is what the resolver needs from the API: the informers' caches,
// behind an interface so that the record logic is tested without a cluster.
type lister interface {
	Service(ns, name string) (*v1.Service, bool)
	Endpoints(ns, name string) (*v1.Endpoints, bool)
	Services() []*v1.Service
	EndpointsAll() []*v1.Endpoints
}

type informerLister struct {
	svc corelisters.ServiceLister
	eps corelisters.EndpointsLister
}

func (l informerLister) Service(ns, name string) (*v1.Service, bool) {
	s, err := l.svc.Services(ns).Get(name)
	return s, err == nil
}

func (l informerLister) Endpoints(ns, name string) (*v1.Endpoints, bool) {
	e, err := l.eps.Endpoints(ns).Get(name)
	return e, err == nil
}

func (l informerLister) Services() []*v1.Service {
	s, _ := l.svc.List(labels.Everything())
	return s
}

func (l informerLister) EndpointsAll() []*v1.Endpoints {
	e, _ := l.eps.List(labels.Everything())
	return e
}

func main() {
	var (
		domain     = flag.String("domain", "cluster.local", "cluster domain (kubelet's --cluster-domain)")
		listen     = flag.String("listen", ":53", "address for DNS over UDP and TCP")
		health     = flag.String("health", ":8080", "address for /healthz and /readyz")
		kubeconfig = flag.String("kubeconfig", "", "kubeconfig file (default: in-cluster service account)")
		ttl        = flag.Uint("ttl", 5, "TTL of every answer, in seconds")
	)
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.LUTC)

	var cfg *rest.Config
	var err error
	if *kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", *kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		log.Fatalf("no API server configuration (give --kubeconfig outside a pod): %v", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Fatalf("API client: %v", err)
	}

	factory := informers.NewSharedInformerFactory(client, 0)
	svcInf := factory.Core().V1().Services()
	epInf := factory.Core().V1().Endpoints()
	r := &resolver{
		zone: dns.Fqdn(strings.ToLower(*domain)),
		ttl:  uint32(*ttl),
		api:  informerLister{svc: svcInf.Lister(), eps: epInf.Lister()},
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	factory.Start(ctx.Done())

	var ready int32
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), svcInf.Informer().HasSynced, epInf.Informer().HasSynced) {
			atomic.StoreInt32(&ready, 1)
			log.Printf("serving %s from %d Services", r.zone, len(r.api.Services()))
		}
	}()

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if atomic.LoadInt32(&ready) == 0 {
			http.Error(w, "caches not synced yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	go func() { log.Fatal(http.ListenAndServe(*health, mux)) }()

	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		if atomic.LoadInt32(&ready) == 0 {
			m := new(dns.Msg)
			m.SetRcode(req, dns.RcodeServerFailure)
			_ = w.WriteMsg(m)
			return
		}
		_, udp := w.RemoteAddr().(*net.UDPAddr)
		_ = w.WriteMsg(r.answer(req, udp))
	})
	for _, network := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: *listen, Net: network, Handler: handler}
		go func() { log.Fatalf("%s %s: %v", srv.Net, srv.Addr, srv.ListenAndServe()) }()
	}
	log.Printf("listening on %s (udp, tcp), zone %s", *listen, r.zone)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	time.Sleep(100 * time.Millisecond)
}
