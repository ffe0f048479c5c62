// Package routing owns the kernel routes route-agent installs.
package routing

// Protocol is the route protocol number (rtm_protocol) carried by every
// route the agent installs. The agent lists, reconciles and deletes only
// routes with this number, so it never touches a route someone else made,
// and an operator can tell its routes apart with `ip route show proto 201`.
//
// 201 is unassigned in iproute2's rt_protos and clear of the numbers FRR
// (186-196), BIRD (12) and zebra (11) use. deploy/iproute2 names it
// "route-agent" for `ip route` output.
//
// systemd-networkd deletes routes of protocols it does not know unless
// ManageForeignRoutes=no: Watch notices and Set puts them back, but the two
// would fight, so nodes running networkd need that setting.
const Protocol = 201
