package nft

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// DefaultTable is the name of the tables when Options.Table is empty.
const DefaultTable = "route-agent"

// Options configure a Masq.
type Options struct {
	// Table names the ip and ip6 tables; DefaultTable when empty.
	Table string
	// NetNS is a file descriptor of the network namespace to work in, 0
	// for the current one. It must stay open while the Masq is in use.
	NetNS int
	// Logger receives the rare events worth a line, such as a table
	// rebuilt because it was found incompatible; none when nil.
	Logger *slog.Logger
}

// Masq keeps the kernel's nftables masquerade equal to a Config. It owns
// the tables it names, both families, and touches nothing else.
type Masq struct {
	table string
	netns int
	log   *slog.Logger
	conn  *nftables.Conn // for reading; every batch dials its own socket

	mu sync.Mutex // serialises Set, Remove and Counters
	// verified is the state the kernel was last read to hold, at ruleset
	// generation gen; nil when it must be read again.
	verified *desired
	gen      uint32

	batches atomic.Uint64 // batches committed, for tests
}

// New returns a Masq. It touches nothing in the kernel until Set.
func New(o Options) (*Masq, error) {
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c, err := nftables.New(nftables.WithNetNSFd(o.NetNS))
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	return &Masq{table: o.Table, netns: o.NetNS, log: o.Logger, conn: c}, nil
}

// Set makes the tables carry out c. It may be called again with the same
// Config and then sends nothing: it reads the ruleset generation, and
// only when that or the Config changed since the kernel was last seen to
// match does it read the tables. A difference is applied in one
// transaction that adds and deletes set elements and rules in place, so
// counters and the NAT of established flows survive it. Set also repairs
// what someone else changed in its tables. A Config that does not
// validate changes nothing.
func (m *Masq) Set(c Config) error {
	want, err := plan(c)
	if err != nil {
		return fmt.Errorf("masquerade config: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	gen, err := generation(m.netns)
	if err != nil {
		return err
	}
	if m.verified != nil && m.gen == gen && m.verified.equal(want) {
		return nil
	}
	m.verified = nil

	b, err := newBatch()
	if err != nil {
		return err
	}
	for i, f := range families {
		have, err := m.read(f)
		if err != nil {
			return err
		}
		m.update(b, f, have, want[i])
	}
	if b.empty() {
		m.verified, m.gen = &want, gen
		return nil
	}
	if err := b.commit(m.netns); err != nil {
		return fmt.Errorf("updating nftables masquerade tables %q: %w", m.table, err)
	}
	m.batches.Add(1)
	// The kernel is not marked verified here: the next Set reads it back,
	// which also notices a change someone made right after this one.
	return nil
}

// Remove deletes the tables. It is not an error when they are absent.
func (m *Masq) Remove() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.verified = nil
	b, err := newBatch()
	if err != nil {
		return err
	}
	for _, f := range families {
		t, err := m.findTable(f)
		if err != nil {
			return err
		}
		if t != nil {
			b.conn.DelTable(t)
			b.n++
		}
	}
	if b.empty() {
		return nil
	}
	if err := b.commit(m.netns); err != nil {
		return fmt.Errorf("deleting nftables masquerade tables %q: %w", m.table, err)
	}
	m.batches.Add(1)
	return nil
}

// Count is what the masquerade rule of one family has counted.
type Count struct {
	// Packets is the number of connections masqueraded: netfilter
	// consults NAT chains only for the first packet of a connection,
	// and the rest follow its conntrack entry.
	Packets uint64
	// Bytes is the size of those first packets.
	Bytes uint64
}

// Counters are the masquerade rules' counters, zero for a family whose
// table is absent. They count from the table's creation: Set never
// recreates it.
type Counters struct {
	IPv4, IPv6 Count
}

// Counters reads the masquerade rules' counters.
func (m *Masq) Counters() (Counters, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out Counters
	for i, f := range families {
		t, err := m.findTable(f)
		if err != nil {
			return Counters{}, err
		}
		if t == nil {
			continue
		}
		rules, err := m.conn.GetRules(t, &nftables.Chain{Name: chainName, Table: t})
		if err != nil {
			return Counters{}, fmt.Errorf("listing rules of %s %s %s: %w", f.name, m.table, chainName, err)
		}
		var c Count
		for _, r := range rules {
			if !hasMasq(r) {
				continue
			}
			for _, e := range r.Exprs {
				if ce, ok := e.(*expr.Counter); ok {
					c.Packets += ce.Packets
					c.Bytes += ce.Bytes
				}
			}
		}
		if i == 0 {
			out.IPv4 = c
		} else {
			out.IPv6 = c
		}
	}
	return out, nil
}

func hasMasq(r *nftables.Rule) bool {
	for _, e := range r.Exprs {
		if _, ok := e.(*expr.Masq); ok {
			return true
		}
	}
	return false
}

// tableView is what the kernel holds in one family's table.
type tableView struct {
	table  *nftables.Table // nil when there is no table
	chains []*nftables.Chain
	sets   map[string]setView
	rules  []*nftables.Rule // of our chain
}

type setView struct {
	set   *nftables.Set
	spans []span
	ok    bool // the elements read back as spans
}

func (m *Masq) findTable(f family) (*nftables.Table, error) {
	tables, err := m.conn.ListTablesOfFamily(f.table)
	if err != nil {
		return nil, fmt.Errorf("listing %s tables: %w", f.name, err)
	}
	for _, t := range tables {
		if t.Name == m.table {
			return t, nil
		}
	}
	return nil, nil
}

func (m *Masq) read(f family) (*tableView, error) {
	v := &tableView{sets: map[string]setView{}}
	t, err := m.findTable(f)
	if err != nil || t == nil {
		return v, err
	}
	v.table = t
	chains, err := m.conn.ListChainsOfTableFamily(f.table)
	if err != nil {
		return nil, fmt.Errorf("listing %s chains: %w", f.name, err)
	}
	for _, c := range chains {
		if c.Table.Name != m.table {
			continue
		}
		v.chains = append(v.chains, c)
		if c.Name == chainName {
			if v.rules, err = m.conn.GetRules(t, c); err != nil {
				return nil, fmt.Errorf("listing rules of %s %s %s: %w", f.name, m.table, chainName, err)
			}
		}
	}
	sets, err := m.conn.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("listing sets of %s %s: %w", f.name, m.table, err)
	}
	for _, s := range sets {
		elems, err := m.conn.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("listing elements of %s %s set %s: %w", f.name, m.table, s.Name, err)
		}
		spans, ok := elementSpans(elems, int(s.KeyType.Bytes))
		v.sets[s.Name] = setView{set: s, spans: spans, ok: ok}
	}
	return v, nil
}

// incompatible says why the table cannot be brought to what Set wants by
// editing it in place, or "" when it can.
func incompatible(f family, v *tableView) string {
	for _, c := range v.chains {
		if c.Name != chainName {
			continue
		}
		if c.Type != nftables.ChainTypeNAT || c.Hooknum == nil || *c.Hooknum != *nftables.ChainHookPostrouting ||
			c.Priority == nil || *c.Priority != *nftables.ChainPriorityNATSource {
			return fmt.Sprintf("chain %s is not a nat chain at postrouting, priority srcnat", chainName)
		}
	}
	for name, s := range v.sets {
		want := f.setKeyType(name)
		if isOurSet(f, name) && (!s.set.Interval || s.set.IsMap || s.set.KeyType.Bytes != want.Bytes || s.set.KeyType.Name != want.Name) {
			return fmt.Sprintf("set %s is not an interval set of %s", name, want.Name)
		}
	}
	return ""
}

func isOurSet(f family, name string) bool {
	for _, n := range f.setNames() {
		if n == name {
			return true
		}
	}
	return false
}

// update adds to b what turns have into want; want nil removes the table.
func (m *Masq) update(b *batch, f family, have *tableView, want *tableState) {
	if want == nil {
		if have.table != nil {
			b.conn.DelTable(have.table)
			b.n++
		}
		return
	}
	t := &nftables.Table{Name: m.table, Family: f.table}
	if have.table != nil {
		if why := incompatible(f, have); why != "" {
			// Deleting and adding in one transaction leaves no moment
			// without masquerade, but the counters start again.
			m.log.Warn("rebuilding nftables masquerade table", "family", f.name, "table", m.table, "reason", why)
			b.conn.DelTable(have.table)
			b.n++
			have = &tableView{sets: map[string]setView{}}
		}
	}
	if have.table == nil {
		b.conn.AddTable(t)
		b.n++
	}

	sets := map[string]*nftables.Set{}
	for _, name := range f.setNames() {
		s := &nftables.Set{Table: t, Name: name, KeyType: f.setKeyType(name), Interval: true}
		sets[name] = s
		cur, exists := have.sets[name]
		switch {
		case !exists:
			b.addSet(s)
			b.addElements(s, want.sets[name])
		case !cur.ok:
			b.flushSet(s)
			b.addElements(s, want.sets[name])
		default:
			gone, added := diffSpans(cur.spans, want.sets[name])
			b.deleteElements(s, gone)
			b.addElements(s, added)
		}
	}

	chain := &nftables.Chain{
		Name:     chainName,
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	}
	var haveRules []*nftables.Rule
	hasChain := false
	for _, c := range have.chains {
		if c.Name == chainName {
			hasChain = true
			haveRules = have.rules
		}
	}
	if !hasChain {
		b.conn.AddChain(chain)
		b.n++
	}
	gone, add := diffRules(haveRules, want.rules)
	for _, r := range gone {
		r.Table, r.Chain = t, chain
		if err := b.conn.DelRule(r); err != nil {
			b.fail(err)
		}
		b.n++
	}
	for _, a := range add {
		r := &nftables.Rule{Table: t, Chain: chain, Exprs: withSetIDs(a.rule.exprs, sets), UserData: commentData(a.rule.comment), Position: a.before}
		if a.before != 0 {
			b.conn.InsertRule(r)
		} else {
			b.conn.AddRule(r)
		}
		b.n++
	}

	// Chains and sets of ours that the rules no longer use go last, once
	// nothing refers to them.
	for _, c := range have.chains {
		if c.Name != chainName {
			b.conn.FlushChain(c)
			b.conn.DelChain(c)
			b.n += 2
		}
	}
	for name, s := range have.sets {
		// An anonymous set goes with the rule that holds it.
		if !isOurSet(f, name) && !s.set.Anonymous {
			b.conn.DelSet(s.set)
			b.n++
		}
	}
}

// withSetIDs fills in the lookups' set IDs, which let a rule refer to a
// set created in the same transaction.
func withSetIDs(exprs []expr.Any, sets map[string]*nftables.Set) []expr.Any {
	out := make([]expr.Any, len(exprs))
	for i, e := range exprs {
		if l, ok := e.(*expr.Lookup); ok {
			c := *l
			c.SetID = sets[l.SetName].ID
			e = &c
		}
		out[i] = e
	}
	return out
}

// diffSpans returns the spans of have that want lacks and those of want
// that have lacks.
func diffSpans(have, want []span) (gone, added []span) {
	in := make(map[span]bool, len(want))
	for _, s := range want {
		in[s] = true
	}
	for _, s := range have {
		if !in[s] {
			gone = append(gone, s)
		}
		delete(in, s)
	}
	for _, s := range want {
		if in[s] {
			added = append(added, s)
		}
	}
	return gone, added
}

type ruleInsert struct {
	rule   rule
	before uint64 // handle of the rule to insert in front of; 0 appends
}

// diffRules matches the chain's rules to the wanted ones by comment, in
// order. It returns the rules to delete and the wanted rules missing,
// each with the handle of the kept rule it goes before.
func diffRules(have []*nftables.Rule, want []rule) (gone []*nftables.Rule, add []ruleInsert) {
	kept := make([]uint64, len(want)) // handle of the rule kept for want[i]
	next := 0
	for _, r := range have {
		c := ruleComment(r)
		found := -1
		for i := next; i < len(want); i++ {
			if want[i].comment == c {
				found = i
				break
			}
		}
		if found < 0 {
			gone = append(gone, r)
			continue
		}
		kept[found] = r.Handle
		next = found + 1
	}
	for i, w := range want {
		if kept[i] != 0 {
			continue
		}
		var before uint64
		for _, h := range kept[i+1:] {
			if h != 0 {
				before = h
				break
			}
		}
		add = append(add, ruleInsert{rule: w, before: before})
	}
	return gone, add
}
