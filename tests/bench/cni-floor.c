/*
 * cni-floor: the kernel work of a bridge CNI ADD and nothing else, as a
 * lower bound for any plugin that builds the same datapath from an exec'd
 * process. `cni-bench --floor` times it against bridge + host-local; see
 * docs/PERFORMANCE.md ("The kernel floor").
 *
 * What it does, each step in its cheapest form:
 *  - ADD: one RTM_NEWLINK creates the veth pair with its peer made directly
 *    in the pod namespace (at a chosen ifindex, so no lookup follows), the
 *    host end enslaved to the bridge and up; then, from a netlink socket
 *    opened inside the pod namespace, one datagram sets the pod end up,
 *    adds its address and the two routes (cluster network and default)
 *    via the gateway. With "dataDir" in the config (unless
 *    FCT_FLOOR_IPAM=0), a host-local style reservation first: lock file,
 *    flock, O_EXCL create of the address's file, the owner written in it.
 *  - DEL: delete the pod end (the pair goes with it), remove the file.
 *
 * What it leaves out on purpose: configuration and subnet.env parsing,
 * address allocation (the address comes from the digits of the container
 * ID: 10.244.7.<n % 250 + 2>), the bridge's gateway check (only a missing
 * bridge is created), MAC addresses, hairpin, ip_forward, the CNI result
 * beyond what the benchmark reads, every error path but a message. It is
 * a measuring stick, not a plugin: never install it.
 *
 * Build: cc -O2 -static-pie -o cni-floor cni-floor.c (the linking
 * flannel-rs uses; cni-bench does this itself).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define GATEWAY "10.244.7.1"
#define BRIDGE "cni0"
#define POD_IFINDEX 2 /* a new pod namespace holds only lo (1) */

static char req[4096];
static int req_len, req_count, seq;

static void fail(const char *what, int err)
{
	printf("{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"cni-floor: %s: %s\"}\n",
	       what, strerror(err));
	exit(1);
}

static struct nlmsghdr *begin(int type, int flags, const void *hdr, int hdr_len)
{
	struct nlmsghdr *h = (struct nlmsghdr *)(req + req_len);
	memset(h, 0, NLMSG_HDRLEN);
	h->nlmsg_type = type;
	h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
	h->nlmsg_seq = ++seq;
	h->nlmsg_len = NLMSG_HDRLEN + NLMSG_ALIGN(hdr_len);
	memcpy(NLMSG_DATA(h), hdr, hdr_len);
	return h;
}

static struct rtattr *attr(struct nlmsghdr *h, int type, const void *data, int len)
{
	struct rtattr *a = (struct rtattr *)((char *)h + NLMSG_ALIGN(h->nlmsg_len));
	a->rta_type = type;
	a->rta_len = RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(a), data, len);
	h->nlmsg_len = NLMSG_ALIGN(h->nlmsg_len) + RTA_ALIGN(a->rta_len);
	return a;
}

static void attr_u32(struct nlmsghdr *h, int type, unsigned v) { attr(h, type, &v, 4); }
static void attr_str(struct nlmsghdr *h, int type, const char *s) { attr(h, type, s, strlen(s) + 1); }
/* A nested attribute ends where the message ends now. */
static void nest_end(struct nlmsghdr *h, struct rtattr *a) { a->rta_len = (char *)h + h->nlmsg_len - (char *)a; }
static void end(struct nlmsghdr *h)
{
	req_len += NLMSG_ALIGN(h->nlmsg_len);
	req_count++;
}

static int nl_socket(void)
{
	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	if (s < 0 || connect(s, (struct sockaddr *)&kernel, sizeof kernel) < 0)
		fail("netlink socket", errno);
	return s;
}

/* Sends the queued requests in one datagram; returns the first error
 * (a negative errno) after every request is acknowledged. */
static int exchange(int s)
{
	char reply[8192];
	int acked = 0, err = 0;
	if (send(s, req, req_len, 0) < 0)
		fail("netlink send", errno);
	while (acked < req_count) {
		int n = recv(s, reply, sizeof reply, 0);
		if (n < 0)
			fail("netlink recv", errno);
		for (struct nlmsghdr *h = (struct nlmsghdr *)reply; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type != NLMSG_ERROR)
				continue;
			struct nlmsgerr *e = NLMSG_DATA(h);
			if (e->error && !err)
				err = e->error;
			acked++;
		}
	}
	req_len = req_count = 0;
	return err;
}

/* The value of "key":"value" in the config; no escapes expected. */
static int json_string(const char *json, const char *key, char *out, size_t out_len)
{
	char pattern[64];
	snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
	const char *p = strstr(json, pattern);
	if (!p)
		return 0;
	p += strlen(pattern);
	const char *q = strchr(p, '"');
	if (!q || (size_t)(q - p) >= out_len)
		return 0;
	memcpy(out, p, q - p);
	out[q - p] = 0;
	return 1;
}

static void create_bridge(int s)
{
	struct ifinfomsg up = {.ifi_flags = IFF_UP, .ifi_change = IFF_UP};
	struct nlmsghdr *h = begin(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &up, sizeof up);
	attr_str(h, IFLA_IFNAME, BRIDGE);
	attr_u32(h, IFLA_MTU, 1450);
	struct rtattr *info = attr(h, IFLA_LINKINFO, NULL, 0);
	attr_str(h, IFLA_INFO_KIND, "bridge");
	nest_end(h, info);
	end(h);
	int err = exchange(s);
	if (err && err != -EEXIST)
		fail("create bridge", -err);
	struct ifaddrmsg am = {.ifa_family = AF_INET, .ifa_prefixlen = 24, .ifa_index = if_nametoindex(BRIDGE)};
	in_addr_t gw = inet_addr(GATEWAY);
	h = begin(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &am, sizeof am);
	attr(h, IFA_LOCAL, &gw, 4);
	attr(h, IFA_ADDRESS, &gw, 4);
	end(h);
	if ((err = exchange(s)))
		fail("bridge address", -err);
}

/* The veth pair, host end on the bridge and up, pod end in the pod
 * namespace at `pod_index` (0: the kernel picks). */
static int create_veth(int s, const char *host, unsigned bridge, int netns, int pod_index)
{
	struct ifinfomsg up = {.ifi_flags = IFF_UP, .ifi_change = IFF_UP};
	struct nlmsghdr *h = begin(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &up, sizeof up);
	attr_str(h, IFLA_IFNAME, host);
	attr_u32(h, IFLA_MTU, 1450);
	attr_u32(h, IFLA_MASTER, bridge);
	attr_u32(h, IFLA_NUM_TX_QUEUES, 1);
	attr_u32(h, IFLA_NUM_RX_QUEUES, 1);
	struct rtattr *info = attr(h, IFLA_LINKINFO, NULL, 0);
	attr_str(h, IFLA_INFO_KIND, "veth");
	struct rtattr *data = attr(h, IFLA_INFO_DATA, NULL, 0);
	struct rtattr *peer = attr(h, VETH_INFO_PEER, NULL, 0);
	struct ifinfomsg pod = {.ifi_index = pod_index};
	memcpy((char *)h + h->nlmsg_len, &pod, sizeof pod);
	h->nlmsg_len += NLMSG_ALIGN(sizeof pod);
	attr_str(h, IFLA_IFNAME, "eth0");
	attr_u32(h, IFLA_MTU, 1450);
	attr_u32(h, IFLA_NET_NS_FD, netns);
	attr_u32(h, IFLA_NUM_TX_QUEUES, 1);
	attr_u32(h, IFLA_NUM_RX_QUEUES, 1);
	nest_end(h, peer);
	nest_end(h, data);
	nest_end(h, info);
	end(h);
	return exchange(s);
}

int main(void)
{
	static char config[65536];
	int config_len = 0, n;
	while ((n = read(0, config + config_len, sizeof config - 1 - config_len)) > 0)
		config_len += n;
	const char *cmd = getenv("CNI_COMMAND"), *id = getenv("CNI_CONTAINERID");
	const char *netns_path = getenv("CNI_NETNS");
	if (!cmd)
		fail("CNI_COMMAND", EINVAL);
	if (!strcmp(cmd, "VERSION")) {
		puts("{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"1.0.0\"]}");
		return 0;
	}
	if (!id || !netns_path)
		fail("CNI_CONTAINERID and CNI_NETNS", EINVAL);

	unsigned num = 0;
	for (const char *p = id; *p; p++)
		if (*p >= '0' && *p <= '9')
			num = num * 10 + (*p - '0');
	struct in_addr ip = {.s_addr = htonl(0x0af40700 | (num % 250 + 2))};
	char ip_text[INET_ADDRSTRLEN], host[IFNAMSIZ], dir[512] = "", file[600] = "";
	inet_ntop(AF_INET, &ip, ip_text, sizeof ip_text);
	size_t id_len = strlen(id);
	snprintf(host, sizeof host, "vfl%s", id + (id_len > 11 ? id_len - 11 : 0));
	const char *ipam = getenv("FCT_FLOOR_IPAM");
	if ((!ipam || strcmp(ipam, "0")) && json_string(config, "dataDir", dir, sizeof dir - 8)) {
		strcat(dir, "/floor");
		snprintf(file, sizeof file, "%s/%s", dir, ip_text);
	}
	int netns = open(netns_path, O_RDONLY | O_CLOEXEC);
	if (netns < 0)
		fail("open CNI_NETNS", errno);

	if (!strcmp(cmd, "DEL")) {
		if (setns(netns, CLONE_NEWNET))
			fail("setns", errno);
		int s = nl_socket();
		struct ifinfomsg any = {0};
		struct nlmsghdr *h = begin(RTM_DELLINK, 0, &any, sizeof any);
		attr_str(h, IFLA_IFNAME, "eth0");
		end(h);
		int err = exchange(s);
		if (err && err != -ENODEV)
			fail("delete eth0", -err);
		if (*file && unlink(file) && errno != ENOENT)
			fail("remove reservation", errno);
		return 0;
	}
	if (strcmp(cmd, "ADD"))
		fail(cmd, ENOTSUP);

	if (*file) {
		char lock[600];
		snprintf(lock, sizeof lock, "%s/lock", dir);
		int l = open(lock, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		if (l < 0 && errno == ENOENT) {
			char parent[512];
			snprintf(parent, sizeof parent, "%.*s", (int)(strlen(dir) - 6), dir);
			mkdir(parent, 0755);
			mkdir(dir, 0755);
			l = open(lock, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		}
		if (l < 0 || flock(l, LOCK_EX))
			fail("IPAM lock", errno);
		int f = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (f < 0)
			fail("reserve address", errno);
		char owner[300];
		int len = snprintf(owner, sizeof owner, "%s\r\neth0", id);
		if (write(f, owner, len) != len)
			fail("write reservation", errno);
		close(f);
	}

	int s = nl_socket();
	unsigned bridge = if_nametoindex(BRIDGE);
	if (!bridge) {
		create_bridge(s);
		bridge = if_nametoindex(BRIDGE);
	}
	int pod_index = POD_IFINDEX;
	int err = create_veth(s, host, bridge, netns, pod_index);
	if (err == -EBUSY) { /* the index is taken: let the kernel choose */
		pod_index = 0;
		err = create_veth(s, host, bridge, netns, 0);
	}
	if (err)
		fail("create veth", -err);
	if (setns(netns, CLONE_NEWNET))
		fail("setns", errno);
	s = nl_socket();
	if (!pod_index)
		pod_index = if_nametoindex("eth0");

	struct ifinfomsg up = {.ifi_index = pod_index, .ifi_flags = IFF_UP, .ifi_change = IFF_UP};
	end(begin(RTM_NEWLINK, 0, &up, sizeof up));
	struct ifaddrmsg am = {.ifa_family = AF_INET, .ifa_prefixlen = 24, .ifa_index = pod_index};
	struct nlmsghdr *h = begin(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &am, sizeof am);
	attr(h, IFA_LOCAL, &ip, 4);
	attr(h, IFA_ADDRESS, &ip, 4);
	end(h);
	in_addr_t gw = inet_addr(GATEWAY), cluster = inet_addr("10.244.0.0");
	for (int dst_len = 16; dst_len >= 0; dst_len -= 16) {
		struct rtmsg rm = {.rtm_family = AF_INET, .rtm_dst_len = dst_len, .rtm_table = RT_TABLE_MAIN,
				   .rtm_protocol = RTPROT_BOOT, .rtm_scope = RT_SCOPE_UNIVERSE, .rtm_type = RTN_UNICAST};
		h = begin(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &rm, sizeof rm);
		if (dst_len)
			attr(h, RTA_DST, &cluster, 4);
		attr(h, RTA_GATEWAY, &gw, 4);
		attr_u32(h, RTA_OIF, pod_index);
		end(h);
	}
	if ((err = exchange(s)))
		fail("pod address and routes", -err);
	printf("{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"" BRIDGE "\"},{\"name\":\"%s\"},"
	       "{\"name\":\"eth0\",\"sandbox\":\"%s\"}],\"ips\":[{\"address\":\"%s/24\",\"gateway\":\"" GATEWAY
	       "\",\"interface\":2}]}\n",
	       host, netns_path, ip_text);
	return 0;
}
