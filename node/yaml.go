package node

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// decodeYAML layers a YAML document onto the struct v points to, walking
// the document beside the struct so that every error names the option as
// the file spells it ("server.idle_timeout", "sync.links[0].upstreams[1].url")
// and its line, never a Go type: an operator reads these, not a
// programmer. A key the struct does not have is an error, so that a
// misspelt option is never silently ignored. Keys the document leaves out
// keep their values; a list given replaces the whole list, as yaml.v3
// does.
func decodeYAML(n *yaml.Node, v any) error {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	return decodeValue("", n, reflect.ValueOf(v).Elem())
}

func decodeValue(path string, n *yaml.Node, v reflect.Value) error {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if isNull(n) && v.Kind() == reflect.Struct {
		return nil // "server:" with nothing under it sets nothing
	}
	if v.Kind() == reflect.Struct && v.Type() != reflect.TypeFor[time.Time]() {
		return decodeStruct(path, n, v)
	}
	if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct && !isNull(n) {
		if n.Kind != yaml.SequenceNode {
			return wantErr(path, n, v.Type())
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := decodeValue(fmt.Sprintf("%s[%d]", path, i), item, s.Index(i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	}
	if n.Kind == yaml.MappingNode || (n.Kind == yaml.SequenceNode && v.Kind() != reflect.Slice) {
		return wantErr(path, n, v.Type())
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		return wantErr(path, n, v.Type())
	}
	return nil
}

func decodeStruct(path string, n *yaml.Node, v reflect.Value) error {
	if n.Kind != yaml.MappingNode {
		what := "a section of options"
		if path == "" {
			what = "a YAML mapping of sections (node:, server:, store:, …)"
		}
		return fmt.Errorf("%sline %d: want %s, got %s", prefix(path), n.Line, what, describe(n))
	}
	fields := map[string]int{}
	var names []string
	for i := range v.NumField() {
		name := yamlName(v.Type().Field(i))
		fields[name] = i
		names = append(names, name)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := join(path, k.Value)
		idx, ok := fields[k.Value]
		if !ok {
			return fmt.Errorf("%s (line %d): unknown option; %s takes %s", key, k.Line, section(path), strings.Join(names, ", "))
		}
		if seen[k.Value] {
			return fmt.Errorf("%s (line %d): given twice", key, k.Line)
		}
		seen[k.Value] = true
		if err := decodeValue(key, val, v.Field(idx)); err != nil {
			return err
		}
	}
	return nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// wantErr says what the option takes, in the file's words.
func wantErr(path string, n *yaml.Node, t reflect.Type) error {
	return fmt.Errorf("%s (line %d): want %s, got %s", path, n.Line, kindOf(t), describe(n))
}

func kindOf(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "a duration such as 30s or 1h30m"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return fmt.Sprintf("a whole number that fits %d bits", t.Bits())
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		return "a whole number, not negative"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return "a list of entries, each a mapping of options"
	case t.Kind() == reflect.Slice:
		return "a list of " + strings.TrimPrefix(strings.TrimPrefix(kindOf(t.Elem()), "a "), "an ") + "s, such as [a, b]"
	case t.Kind() == reflect.Struct:
		return "a section of options"
	}
	return "a value of another form"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	if isNull(n) {
		return "nothing"
	}
	return fmt.Sprintf("%q", n.Value)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func prefix(path string) string {
	if path == "" {
		return ""
	}
	return path + ": "
}

func section(path string) string {
	if path == "" {
		return "the file"
	}
	return path
}
