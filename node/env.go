package node

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/patchmesh/patchmesh/auth"
)

// EnvPrefix starts every environment variable a node reads.
const EnvPrefix = "PATCHMESH_"

var (
	durationType = reflect.TypeFor[time.Duration]()
	adminsType   = reflect.TypeFor[[]auth.Admin]()
	stringsType  = reflect.TypeFor[[]string]()
)

// envField is one overridable option: its variable and where it lives.
type envField struct {
	name  string // PATCHMESH_SECTION_FIELD
	path  string // section.field, as in the YAML file
	index []int  // reflect field index path into Config
	typ   reflect.Type
}

// envFields lists every leaf option of Config, derived from the yaml tags
// so that no field can be added without its environment variable.
func envFields() []envField {
	var out []envField
	ct := reflect.TypeFor[Config]()
	for i := range ct.NumField() {
		sec := ct.Field(i)
		secTag := yamlName(sec)
		for j := range sec.Type.NumField() {
			f := sec.Type.Field(j)
			if f.Tag.Get("env") == "-" {
				continue // structured options live in the file only
			}
			tag := yamlName(f)
			out = append(out, envField{
				name:  EnvPrefix + strings.ToUpper(secTag+"_"+tag),
				path:  secTag + "." + tag,
				index: []int{i, j},
				typ:   f.Type,
			})
		}
	}
	return out
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "" {
		// Every field must be tagged; an untagged one is a programming
		// error that the config tests catch.
		panic("node: config field " + f.Name + " has no yaml tag")
	}
	return name
}

// EnvVars lists every environment variable ApplyEnv reads, each with the
// option it overrides, e.g. "PATCHMESH_SERVER_LISTEN (server.listen)".
func EnvVars() []string {
	fs := envFields()
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.name + " (" + f.path + ")"
	}
	return out
}

// ApplyEnv overrides options from PATCHMESH_<SECTION>_<FIELD> variables,
// e.g. PATCHMESH_SERVER_LISTEN or PATCHMESH_STORE_MAX_CONNS. Durations are
// written as Go durations (30s, 1h30m). An empty variable counts as unset.
// A malformed value is an error naming the variable, and c is then left
// unchanged.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	next := *c
	next.Auth.Admins = append([]auth.Admin(nil), c.Auth.Admins...)
	v := reflect.ValueOf(&next).Elem()
	var errs []error
	for _, f := range envFields() {
		s := getenv(f.name)
		if s == "" {
			continue
		}
		if err := setField(v.FieldByIndex(f.index), s); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	*c = next
	return nil
}

// setField parses s into one option. Values are echoed in errors only
// where they cannot be secret (numbers and durations).
func setField(v reflect.Value, s string) error {
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 30s or 1h30m", s)
		}
		v.SetInt(int64(d))
	case v.Type() == adminsType:
		admins, err := parseAdmins(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(admins))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case v.Type() == stringsType:
		var items []string
		for _, item := range strings.Split(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		v.Set(reflect.ValueOf(items))
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case v.Kind() == reflect.Int, v.Kind() == reflect.Int32, v.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%q is not a whole number that fits %d bits", s, v.Type().Bits())
		}
		v.SetInt(n)
	default:
		return fmt.Errorf("options of type %s cannot be set from the environment", v.Type())
	}
	return nil
}

// parseAdmins reads "name:hash,name:hash". bcrypt hashes hold neither ':'
// nor ',', so the format is unambiguous.
func parseAdmins(s string) ([]auth.Admin, error) {
	var out []auth.Admin
	for i, item := range strings.Split(s, ",") {
		name, hash, ok := strings.Cut(strings.TrimSpace(item), ":")
		if !ok || name == "" || hash == "" {
			return nil, fmt.Errorf("entry %d is not name:bcrypt-hash (the list is name:hash,name:hash)", i+1)
		}
		out = append(out, auth.Admin{Name: name, PasswordHash: hash})
	}
	return out, nil
}

// MarshalYAML writes the config as a file Load reads back: durations as
// Go durations ("240h") rather than nanosecond counts.
func (c Config) MarshalYAML() (any, error) {
	return toNode(reflect.ValueOf(c))
}

func toNode(v reflect.Value) (*yaml.Node, error) {
	if v.Type() == durationType {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: formatDuration(time.Duration(v.Int()))}, nil
	}
	if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct {
		// Lists of sections (sync.links, gossip.pools): each item as a
		// section, so that its durations read back too.
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		for i := range v.Len() {
			item, err := toNode(v.Index(i))
			if err != nil {
				return nil, err
			}
			seq.Content = append(seq.Content, item)
		}
		return seq, nil
	}
	if v.Kind() != reflect.Struct {
		n := &yaml.Node{}
		if err := n.Encode(v.Interface()); err != nil {
			return nil, err
		}
		return n, nil
	}
	m := &yaml.Node{Kind: yaml.MappingNode}
	for i := range v.NumField() {
		val, err := toNode(v.Field(i))
		if err != nil {
			return nil, err
		}
		key := &yaml.Node{Kind: yaml.ScalarNode, Value: yamlName(v.Type().Field(i))}
		m.Content = append(m.Content, key, val)
	}
	return m, nil
}

// formatDuration drops the zero tails time.Duration.String adds, so that
// 240h prints as "240h", not "240h0m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
