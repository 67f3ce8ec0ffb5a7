package sessionsync

// SetScope limits what this node sends, while primary, to the flows owns
// reports true for, and makes the other flows of the local table copies:
// the end of a received bulk copy removes those it did not contain, never
// an owned one. It serves virtual clustering, where each vcluster's
// primary sends the flows of its vcluster and both nodes are primary of
// something; nil (the default) owns every flow. A changed scope sends every
// peer a new bulk copy, so flows that became this node's reach them.
func (e *Engine) SetScope(owns func(*Flow) bool) {
	if owns == nil {
		e.scope.Store(nil)
	} else {
		e.scope.Store(&owns)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.peers {
		p.needBulk = true
		p.queue = nil
		poke(p.wake)
	}
}

// owned reports whether f is in this node's scope (SetScope).
func (e *Engine) owned(f *Flow) bool {
	s := e.scope.Load()
	return s == nil || (*s)(f)
}

// keeps reports whether a bulk copy's sweep must keep f: it is in a scope
// set by SetScope. Without one, every flow not in a copy is swept as
// before (a secondary's table holds copies only).
func (e *Engine) keeps(f *Flow) bool {
	s := e.scope.Load()
	return s != nil && (*s)(f)
}

// ownedExpect reports whether an expectation's master flow is in this
// node's scope: an expectation goes with its master.
func (e *Engine) ownedExpect(x *Expect) bool {
	return e.owned(masterFlow(x))
}

// masterFlow is an expectation's master flow as its key gives it (the
// reply tuple the mirror of the original).
func masterFlow(x *Expect) *Flow {
	m := x.Master
	return &Flow{Zone: m.Zone, Proto: m.Proto, Orig: m.Orig, Reply: Tuple{Src: m.Orig.Dst, Dst: m.Orig.Src}}
}
