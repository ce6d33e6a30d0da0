package bench

import (
	"encoding/xml"
	"strings"
	"testing"
)

func TestSeries(t *testing.T) {
	s := Series{Samples: []float64{5, 1, 3, 2, 4}}
	if s.Median() != 3 || s.Min() != 1 || s.Max() != 5 {
		t.Fatalf("median %v min %v max %v", s.Median(), s.Min(), s.Max())
	}
	if (Series{Samples: []float64{1, 2, 3, 10}}).Median() != 2.5 {
		t.Fatal("even count: mean of the middle two")
	}
	if s.Samples[0] != 5 {
		t.Fatal("Median sorted the caller's samples")
	}
}

func TestRatios(t *testing.T) {
	c := Case{Series: []Series{{Name: "a", Samples: []float64{2}}, {Name: "b", Samples: []float64{4}}}}
	c.RatioOf("time", "a", "b", 0.8, true)
	c.RatioOf("speed", "a", "b", 0.9, false)
	c.RatioOf("missing", "a", "nobody", 1, true)
	c.RatioOf("informative", "b", "a", 0, true)
	if len(c.Ratios) != 3 {
		t.Fatalf("ratios: %+v", c.Ratios)
	}
	if c.Ratios[0].Value != 0.5 || !c.Ratios[0].Met() {
		t.Errorf("0.5 ≤ 0.8 is met: %+v", c.Ratios[0])
	}
	if c.Ratios[1].Met() {
		t.Errorf("0.5 ≥ 0.9 is missed: %+v", c.Ratios[1])
	}
	if r := c.Ratios[2]; r.Value != 2 || r.verdict() != "no goal" || r.goalText() != "none" {
		t.Errorf("a ratio without a goal: %+v %q %q", r, r.verdict(), r.goalText())
	}
	// A goal is written as given, not rounded to another.
	if got := (Ratio{Goal: 1.15, AtMost: true}).goalText(); got != "≤ 1.15×" {
		t.Errorf("goal 1.15 written %q", got)
	}
}

func TestReplaceSection(t *testing.T) {
	doc := "# Benchmarks\n\nhand-written figures\n"
	once, err := ReplaceSection(doc, "generated 1\n")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(once, doc) || !strings.Contains(once, BeginMarker+"\ngenerated 1\n"+EndMarker) {
		t.Fatalf("first run: %q", once)
	}
	withTail := once + "\nmore hand-written text\n"
	twice, err := ReplaceSection(withTail, "generated 2\n")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(withTail, "generated 1", "generated 2", 1)
	if twice != want {
		t.Fatalf("everything outside the markers must be kept:\n%q\nwant\n%q", twice, want)
	}
	if _, err := ReplaceSection(EndMarker+"\n"+BeginMarker, "x"); err == nil {
		t.Fatal("markers out of order must be an error")
	}
}

func TestMarkdownAndSVG(t *testing.T) {
	c := Case{Title: "Lifecycle <A&B>", What: "how", Series: []Series{
		{Name: "broker", Unit: "s", Samples: []float64{0.5, 0.6, 0.7}},
		{Name: "peer", Unit: "s", Samples: []float64{1, 1.2, 0.9}},
	}, Notes: []string{"note"}}
	c.RatioOf("broker / peer (time)", "broker", "peer", 0.8, true)
	c.RatioOf("broker / peer (speed)", "broker", "peer", 2, false)
	md := Markdown([]string{"2 cores", "Docker 20.10"}, []Case{c}, "bench/ratios.svg", "go run x")
	for _, want := range []string{"2 cores; Docker 20.10", "| broker | 0.600 s | 0.500 – 0.700 | 3 |", "| broker / peer (time) | 0.60× | ≤ 0.8× | **met** |", "**missed**", "![ratios against their goals](bench/ratios.svg)", "note"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	svg := SVG([]Case{c})
	if err := xml.Unmarshal([]byte(svg), new(struct{})); err != nil {
		t.Fatalf("SVG is not well-formed XML: %v\n%s", err, svg)
	}
	if strings.Count(svg, "<rect") != 3 || !strings.Contains(svg, "#c62828") || !strings.Contains(svg, "#2e7d32") || !strings.Contains(svg, "&lt;A&amp;B&gt;") {
		t.Fatalf("want a background, one green and one red bar, escaped titles:\n%s", svg)
	}
}
