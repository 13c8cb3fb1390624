package transit

// Health is the state of a Transit's connection to the bus.
type Health struct {
	Connected  bool   // connected now
	Reconnects uint64 // times the connection was restored
}

// Health reports the state of the connection to the bus.
func (t *Transit) Health() Health {
	if b, ok := t.bus.(*natsBus); ok && b.nc != nil {
		st := b.nc.Stats()
		return Health{Connected: b.nc.IsConnected(), Reconnects: st.Reconnects}
	}
	return Health{}
}
