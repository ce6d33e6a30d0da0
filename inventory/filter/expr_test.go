package filter_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/inventory/filter"
)

// exprInventory is shaped like the Python broker's: AnsibleTower hosts with
// template/workflow, Container hosts, one record without a name, one with
// empty _broker_args, numbers both as text and as numbers.
const exprInventory = `
- hostname: dhcp-1-2.example.com
  name: test-rhel8-abc
  _broker_provider: AnsibleTower
  _broker_provider_instance: testing
  _broker_args:
    template: deploy-rhel-8.6
    workflow: deploy-base-rhel
    provider: RHEV
    cpu: 4
    memory: 8.0
    _broker_origin: 'cli:jake'
  _broker_facts:
    os_distribution_version: '8.6'
  os_distribution_version: 8.6
  tags: [rhel, test]
  active: true
  type: host
- hostname: satellite.example.com
  name: sat-6.14
  _broker_provider: AnsibleTower
  _broker_provider_instance: production
  _broker_args:
    template: deploy-sat-6.14
    workflow: deploy-sat-jenkins
    provider: RHV
    cpu: 8
    memory: 32
    tags: [sat, capsule]
  release: '6.14'
  os_distribution_version: '8.6'
  active: false
  type: host
- hostname: 8f2d3c6a1b9e
  name: test_4f3e2d1c
  _broker_provider: Container
  _broker_provider_instance: docker
  _broker_args:
    container_host: ubi8:latest
    provider: Container
  type: host
- hostname: noname.example.com
  _broker_provider: Container
  _broker_args:
    container_host: 'fedora:40'
  deleted: null
  type: host
- hostname: empty-args.example.com
  name: jake-empty
  _broker_provider: AnsibleTower
  _broker_args: {}
  type: host
- hostname: test-ctr.example.com
  name: '  Test-CTR  '
  _broker_provider: Container
  _broker_args:
    container_host: 'fedora:40'
    provider: Container
  created: 2024-05-01T10:00:00Z
`

// short names of the records above, by hostname
var exprLabel = map[string]string{
	"dhcp-1-2.example.com": "rhel", "satellite.example.com": "sat", "8f2d3c6a1b9e": "ctr",
	"noname.example.com": "noname", "empty-args.example.com": "empty", "test-ctr.example.com": "tctr",
}

func exprRecords(t testing.TB) []*inventory.Record {
	recs, err := inventory.Parse("expr.yaml", []byte(exprInventory))
	require.NoError(t, err)
	require.Len(t, recs, 6)
	return recs
}

func labels(rs []*inventory.Record) string {
	var out []string
	for _, r := range rs {
		out = append(out, exprLabel[r.Hostname])
	}
	return strings.Join(out, " ")
}

func TestExprFilter(t *testing.T) {
	recs := exprRecords(t)
	const all = "rhel sat ctr noname empty tctr"
	cases := []struct{ filter, want string }{
		// The Python broker's documented examples.
		{`"test" in @inv.hostname`, "tctr"},
		{`@inv._broker_provider == "AnsibleTower"`, "rhel sat empty"},
		{`@inv._broker_args.template.startswith("deploy-sat")`, "sat"},
		{`@inv[-1]`, "tctr"},
		{`@inv[3:7]`, "noname empty tctr"},
		{`@inv[:2]`, "rhel sat"},
		{`"test" in @inv.name | @inv._broker_args.provider != "RHV"`, "rhel ctr"},
		// What term filters got wrong: these matched none and all.
		{`@inv._broker_provider == 'AnsibleTower'`, "rhel sat empty"},
		{`@inv._broker_provider != 'Container'`, "rhel sat empty"},

		// Comparisons.
		{`@inv.name == "sat-6.14"`, "sat"},
		{`@inv.name != "sat-6.14"`, "rhel ctr noname empty tctr"},
		{`@inv._broker_args.cpu < 8`, "rhel"},
		{`@inv._broker_args.cpu <= 8`, "rhel sat"},
		{`@inv._broker_args.cpu > 4`, "sat"},
		{`@inv._broker_args.cpu >= 4`, "rhel sat"},
		{`@inv._broker_args.cpu >= -4.5`, "rhel sat"},
		{`4 <= @inv._broker_args.cpu < 8`, "rhel"},
		{`@inv.name > "t"`, "rhel ctr"},
		{`@inv.tags < ["rhel", "zzz"]`, "rhel"},
		// in / not in: substring, list member, map key, record key.
		{`"rhel" in @inv.name`, "rhel"},
		{`@inv.name in ["sat-6.14", "jake-empty"]`, "sat empty"},
		{`@inv.name in ("sat-6.14",)`, "sat"},
		{`@inv.name not in ["sat-6.14", "jake-empty"]`, "rhel ctr noname tctr"},
		{`"capsule" in @inv._broker_args.tags`, "sat"},
		{`"caps" in @inv._broker_args.tags`, ""},
		{`"template" in @inv._broker_args`, "rhel sat"},
		{`"release" in @inv`, "sat"},
		{`8 in [@inv._broker_args.cpu, 3]`, "sat"},
		// Missing properties: == and in false, != and not in true.
		{`@inv.nothing == "x"`, ""},
		{`@inv.nothing != "x"`, all},
		{`@inv.nothing == None`, ""},
		{`@inv.nothing == @inv.nothing`, ""},
		{`"x" in @inv.nothing`, ""},
		{`"x" not in @inv.nothing`, all},
		{`@inv.nothing.startswith("x")`, ""},
		{`not @inv.nothing.startswith("x")`, all},
		{`@inv._broker_args.cpu > 1`, "rhel sat"}, // no error for the others
		{`@inv.release == "6.14"`, "sat"},
		{`@inv.release != "6.14"`, "rhel ctr noname empty tctr"},
		{`@inv.name.x == 1`, ""},
		// Truthiness.
		{`@inv.active`, "rhel"},
		{`@inv.name`, "rhel sat ctr empty tctr"},
		{`@inv._broker_args`, "rhel sat ctr noname tctr"},
		{`not @inv._broker_args`, "empty"},
		{`@inv.deleted`, ""},
		{`@inv.deleted == None`, "noname"},
		{`@inv.created`, "tctr"},
		{`@inv`, all},
		// Boolean operators and parentheses.
		{`@inv._broker_provider == "Container" and not @inv.name`, "noname"},
		{`(@inv.name == "sat-6.14" or @inv.name == "jake-empty") and @inv._broker_provider == "AnsibleTower"`, "sat empty"},
		{`@inv.name == "sat-6.14" or @inv.name == "jake-empty" and @inv._broker_provider == "Container"`, "sat"},
		{`not (@inv._broker_args.cpu > 4)`, "rhel ctr noname empty tctr"},
		{`not not @inv.active`, "rhel"},
		{`(@inv.nothing or "fallback") == "fallback"`, all},
		// Python equality: no text/number conversion; 1 == 1.0; True == 1.
		{`@inv.os_distribution_version == 8.6`, "rhel"},
		{`@inv.os_distribution_version == "8.6"`, "sat"},
		{`@inv._broker_facts.os_distribution_version == "8.6"`, "rhel"},
		{`@inv._broker_facts.os_distribution_version == 8.6`, ""},
		{`@inv._broker_args.memory == 8`, "rhel"},
		{`@inv._broker_args.memory == 32.0`, "sat"},
		{`@inv.active == True`, "rhel"},
		{`@inv.active == 1`, "rhel"},
		{`@inv.active == False`, "sat"},
		{`@inv.tags == ["rhel", "test"]`, "rhel"},
		{`@inv._broker_args == {}`[:len(`@inv._broker_args == `)] + `@inv._broker_args`, "rhel sat ctr noname empty tctr"},
		// Keys, indexes, methods.
		{`@inv["_broker_args"]["provider"] == "Container"`, "ctr tctr"},
		{`@inv._broker_args["container_host"].endswith(("latest", "40"))`, "ctr noname tctr"},
		{`@inv._broker_args.container_host.endswith(":40")`, "noname tctr"},
		{`@inv.tags[0] == "rhel"`, "rhel"},
		{`@inv.tags[-1] == "test"`, "rhel"},
		{`@inv.tags[5] == "test"`, ""},
		{`@inv.name.lower().strip() == "test-ctr"`, "tctr"},
		{`@inv.name.upper().startswith("SAT")`, "sat"},
		{`@inv.name.strip() == "Test-CTR"`, "tctr"},
		{`@inv.name.strip(" T") == "est-CTR"`, "tctr"},
		{`@inv.name.lstrip() == "Test-CTR  "`, "tctr"},
		{`@inv.name.rstrip("c") == "test_4f3e2d1"`, "ctr"},
		{`@inv.hostname.startswith(["sat", "noname"])`, "sat noname"},
		// String escapes and quoting.
		{`@inv.name == "sat\x2d6.14"`, "sat"},
		{`@inv.name == 'sat-6.14\n'`, ""},
		{`@inv.name == "a|b" or @inv.name == 'it\'s|'`, ""},
		{`'|' not in @inv.hostname`, all},
		// Slices: Python semantics.
		{`@inv[0]`, "rhel"},
		{`@inv[-6]`, "rhel"},
		{`@inv[6]`, ""},
		{`@inv[-7]`, ""},
		{`@inv[:]`, all},
		{`@inv[::2]`, "rhel ctr empty"},
		{`@inv[::-1]`, "tctr empty noname ctr sat rhel"},
		{`@inv[-2:]`, "empty tctr"},
		{`@inv[1:-1:2]`, "sat noname"},
		{`@inv[5:1:-2]`, "tctr noname"},
		{`@inv[100:]`, ""},
		{`@inv[-100:2]`, "rhel sat"},
		{`@inv[2:100:-1]`, ""},
		{`@inv[100:-100:-3]`, "tctr ctr"},
		{`@inv[ 1 : 3 ]`, "sat ctr"},
		{`@inv[::9223372036854775807]`, "rhel"},
		{`@inv[::-9223372036854775808]`, "tctr"},
		{`@inv[-9223372036854775808:9223372036854775807]`, all},
		// Stages chain left to right.
		{`@inv._broker_provider == "Container" | @inv[1:]`, "noname tctr"},
		{`@inv[1:] | @inv._broker_provider == "Container" | @inv[0]`, "ctr"},
		{`@inv[::-1] | @inv.name | @inv[:2]`, "tctr empty"},
		{`@inv[10] | @inv.name`, ""},
	}
	for _, c := range cases {
		f, err := filter.Parse(c.filter)
		require.NoError(t, err, c.filter)
		assert.Equal(t, c.want, labels(f.Apply(recs)), "filter %s", c.filter)
		assert.False(t, f.Empty(), c.filter)
		assert.Equal(t, c.filter, f.String())
	}
}

// A term filter compares text; the expression form compares like Python.
func TestExprVersusTermEquality(t *testing.T) {
	recs := exprRecords(t)
	term, err := filter.Parse("os_distribution_version=8.6")
	require.NoError(t, err)
	assert.Equal(t, "rhel sat", labels(term.Apply(recs)))
	expr, err := filter.Parse(`@inv.os_distribution_version == '8.6'`)
	require.NoError(t, err)
	assert.Equal(t, "sat", labels(expr.Apply(recs)))
}

func TestExprRuntimeErrors(t *testing.T) {
	recs := exprRecords(t)
	for src, want := range map[string][]string{
		`@inv.name < 3`:                            {`@inv.name < 3`, `"dhcp-1-2.example.com"`, "'<' not supported between str and int"},
		`not (@inv.hostname < 3)`:                  {`@inv.hostname < 3`, `"dhcp-1-2.example.com"`},
		`3 in @inv.name`:                           {`3 in @inv.name`, "requires string as left operand, not int"},
		`"4" in @inv._broker_args.cpu`:             {"argument of type 'int' is not iterable"},
		`@inv._broker_args.cpu.startswith("4")`:    {`@inv._broker_args.cpu.startswith("4")`, "int has no method startswith"},
		`@inv.name.startswith(4)`:                  {"startswith() argument must be str or a tuple of str, not int"},
		`@inv.name.strip(4) == ""`:                 {"strip() argument must be str or None, not int"},
		`@inv.hostname == "x" or @inv.active > ""`: {`@inv.active > ""`, `"dhcp-1-2.example.com"`, "between bool and str"},
		`@inv[10]`: {"index 10 out of range for 6 hosts"},
		`@inv[-7]`: {"index -7 out of range for 6 hosts"},
	} {
		f, err := filter.Parse(src)
		require.NoError(t, err, src)
		got, err := f.ApplyErr(recs)
		require.Error(t, err, src)
		for _, w := range want {
			assert.Contains(t, err.Error(), w, src)
		}
		// A record whose evaluation fails is dropped, even under "not".
		assert.Empty(t, got, src)
		assert.Empty(t, f.Apply(recs), src)
	}
	// No hostname: the error names the record's name.
	f, err := filter.Parse(`@inv.name > 1`)
	require.NoError(t, err)
	_, err = f.ApplyErr([]*inventory.Record{{Name: "only-a-name"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"only-a-name"`)

	// Errors on some records do not hide the others' matches.
	f, err = filter.Parse(`@inv.os_distribution_version > 8`)
	require.NoError(t, err)
	got, err := f.ApplyErr(recs)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"satellite.example.com"`)
	assert.Equal(t, "rhel", labels(got))

	// Well-typed filters report nothing.
	f, err = filter.Parse(`@inv._broker_args.cpu > 1 | @inv[0]`)
	require.NoError(t, err)
	got, err = f.ApplyErr(recs)
	require.NoError(t, err)
	assert.Equal(t, "rhel", labels(got))
}

func TestExprMatchAndApply(t *testing.T) {
	recs := exprRecords(t)
	f, err := filter.Parse(`@inv._broker_provider == "Container" | @inv[0]`)
	require.NoError(t, err)
	// Match evaluates the per-record stages only.
	assert.True(t, f.Match(recs[2]))
	assert.True(t, f.Match(recs[5]))
	assert.False(t, f.Match(recs[0]))
	assert.Equal(t, "ctr", labels(f.Apply(recs)))

	sel, err := filter.Parse(`@inv[-1]`)
	require.NoError(t, err)
	assert.True(t, sel.Match(recs[0]))

	// A slice is a new list: appending to it leaves the input alone.
	tail, err := filter.Parse(`@inv[:1]`)
	require.NoError(t, err)
	_ = append(tail.Apply(recs), recs[5])
	assert.Equal(t, "sat", exprLabel[recs[1].Hostname])
}

func TestExprSyntaxErrors(t *testing.T) {
	for src, mention := range map[string]string{
		`@inv.name == "abc`:                `unterminated string "\"abc" at column 14`,
		`@inv.name == 'abc\'`:              `unterminated string "'abc\\'"`,
		`@inv.name =~ "x"`:                 `unknown operator "=~" at column 11`,
		`@inv.a == 1 && @inv.b == 2`:       `unknown operator "&&"`,
		`@inv.name = "x"`:                  `unknown operator "="`,
		`"é" in @inv.name and @inv.x =! 1`: `unknown operator "=!" at column 29`,
		`@inv. == "x"`:                     `expected a property name after "@inv.", found "=="`,
		`@inv.`:                            `expected a property name after "@inv.", found end of stage`,
		`@inv._broker_args. == 1`:          `after "@inv._broker_args."`,
		`@inv.name == "x" | name<x`:        `stage "name<x" has no @inv`,
		`@inv.name == "x" |`:               `stage "" has no @inv`,
		`"@inv" in name`:                   `stage "\"@inv\" in name" has no @inv`,
		`@inv.name.foo()`:                  `unknown method "foo"`,
		`@inv.name.startswith()`:           `startswith() takes 1 arguments, got 0`,
		`@inv.name.lower(1)`:               `lower() takes 0 arguments, got 1`,
		`@inv[1:2:0]`:                      `slice step cannot be zero`,
		`@inv[0] and @inv.x`:               `unexpected "and" after list selection`,
		`@inv.x == 1 and @inv[0]`:          `must be a whole stage`,
		`@inv[0].name == "x"`:              `unexpected "." after list selection`,
		`@inv.name ==`:                     `unexpected end of stage`,
		`@inventory.x == 1`:                `unknown reference "@inventory"`,
		`@inv.name == foo`:                 `unknown name "foo"`,
		`@inv[1.5]`:                        `index "1.5" is not an integer`,
		`@inv[]`:                           `empty list selection`,
		`@inv[1:2:3:4]`:                    `unexpected ":" in list selection`,
		`@inv[1 2]`:                        `unexpected "2" in list selection`,
		`@inv[a]`:                          `expected an integer index, found "a"`,
		`@inv.name == "\x4"`:               `bad escape "\\x4\""`,
		`@inv.n == 99999999999999999999`:   `bad integer "99999999999999999999"`,
		`@inv.n == 1.2.3`:                  `bad number "1.2.3"`,
		`@inv.n == (1`:                     `expected ")", found end of stage`,
		`@inv.n in [1, 2`:                  `expected "]", found end of stage`,
		`@inv.name $ 1`:                    `unexpected "$"`,
		`@inv.name == "x" "y"`:             `unexpected "\"y\""`,
		`@inv.name is None`:                `unexpected "is"`,
		`@inv.tags[x]`:                     `expected an integer index, found "x"`,
		`@inv.a == -"x"`:                   `unexpected "-"`,
		strings.Repeat("(", 60) + "@inv.a" + strings.Repeat(")", 60): `nested too deeply`,
		strings.Repeat("not ", 60) + "@inv.a":                        `nested too deeply`,
	} {
		f, err := filter.Parse(src)
		require.Error(t, err, "%s parsed as %v", src, f)
		assert.Contains(t, err.Error(), mention, src)
		assert.Contains(t, err.Error(), "inventory: filter expression", src)
	}
}
