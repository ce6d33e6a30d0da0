package codec

import (
	"math/rand"
	"testing"
)

// plainTag, written out by hand for speed, gives ruamel.yaml's regular
// expressions' answer (resolveTag(ruamelResolvers, …)).
func TestRuamelTagIsTheResolvers(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	chars := "0123456789_-+.eExXoObBaAfFinINtTlsuL~<=:"
	cases := []string{"", "~", "null", "<<", "=", "1", "-1", "+1", "1_0", "_1", "0b", "0b1", "0b_", "0x", "0x_", "0xfF", "0o", "0o8", "0o7", "017", "09",
		"1.", ".5", "1.5e3", "1.5e+3", "1e3", "1e", ".5e3", ".5e+3", ".", "._", "-.inf", "+.Inf", ".nan", "-.nan", "1_._", "2024-01-01", "2024-1-1 1:02:03", "0X10"}
	for range 200000 {
		b := make([]byte, 1+r.Intn(7))
		for i := range b {
			b[i] = chars[r.Intn(len(chars))]
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		if got, want := plainTag(s), resolveTag(ruamelResolvers, s); got != want {
			t.Fatalf("%q: plainTag %d, the resolvers %d", s, got, want)
		}
	}
}

func FuzzRuamelTag(f *testing.F) {
	for _, s := range []string{"1", "1.5e3", "0x_", ".inf", "2024-01-01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := plainTag(s), resolveTag(ruamelResolvers, s); got != want {
			t.Fatalf("%q: plainTag %d, the resolvers %d", s, got, want)
		}
	})
}

// needsQuotes, with its shortcut for PyYAML, quotes exactly what either
// library's regular expressions take for something other than text.
func TestNeedsQuotesIsTheResolvers(t *testing.T) {
	r := rand.New(rand.NewSource(8))
	chars := "0123456789_-+.:eExXabcdfoOnNyYtTZ ~<=l"
	for range 200000 {
		b := make([]byte, 1+r.Intn(9))
		for i := range b {
			b[i] = chars[r.Intn(len(chars))]
		}
		s := string(b)
		want := mayResolve(s) && (resolveTag(ruamelResolvers, s) != tagStr || resolveTag(pyyamlResolvers, s) != tagStr)
		if needsQuotes(s) != want {
			t.Fatalf("%q: needsQuotes %v, the resolvers %v", s, !want, want)
		}
	}
}
