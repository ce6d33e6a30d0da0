package codec

import "github.com/hostbroker/broker/internal/plain"

// Clone returns a deep copy of r: its maps, slices, Meta and the values
// under them are its own, so a caller may go on changing r (progress
// updates, say) while the store keeps what r was. Pointers other than
// those of Record and Meta, and values that are neither maps nor slices,
// are shared.
func (r *Record) Clone() *Record {
	if r == nil {
		return nil
	}
	c := *r
	c.Args = plain.CopyMap(r.Args)
	c.Facts = plain.CopyMap(r.Facts)
	c.Extra = plain.CopyMap(r.Extra)
	if r.Broker != nil {
		m := *r.Broker
		if m.KeepUntil != nil {
			t := *m.KeepUntil
			m.KeepUntil = &t
		}
		if m.SSH != nil {
			s := *m.SSH
			m.SSH = &s
		}
		m.Data = plain.CopyMap(m.Data)
		c.Broker = &m
	}
	return &c
}
