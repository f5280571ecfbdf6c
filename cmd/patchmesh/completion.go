package main

// `patchmesh completion bash|zsh|fish`: shell completion scripts. The
// scripts are static: they carry the command tree, made from the admin
// command table (commands and each command's flags), so completing costs
// no run of patchmesh and no request to a node.

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

const completionUsage = `Usage: patchmesh completion bash|zsh|fish

Prints a shell completion script for patchmesh commands, subcommands and
flags. Install it, for example:

  bash:  patchmesh completion bash > /etc/bash_completion.d/patchmesh
         (or: source <(patchmesh completion bash) in ~/.bashrc)
  zsh:   patchmesh completion zsh > "${fpath[1]}/_patchmesh"
         (or: source <(patchmesh completion zsh) after compinit in ~/.zshrc)
  fish:  patchmesh completion fish > ~/.config/fish/completions/patchmesh.fish
`

func runCompletion(args []string, stdout, stderr io.Writer) int {
	err := func() error {
		fs := newFlagSet("patchmesh completion")
		pos, err := parseArgs(fs, args)
		if err != nil {
			return err
		}
		if err := wantArgs("patchmesh completion", pos, "SHELL"); err != nil {
			return err
		}
		tree := completionTree()
		var script string
		switch pos[0] {
		case "bash":
			script = bashCompletion(tree)
		case "zsh":
			script = zshCompletion(tree)
		case "fish":
			script = fishCompletion(tree)
		default:
			return usagef("completion: unknown shell %q: want bash, zsh or fish", pos[0])
		}
		_, err = io.WriteString(stdout, script)
		return err
	}()
	return finish("patchmesh completion", completionUsage, err, stdout, stderr)
}

// completionNode is one command path ("patchmesh admin patches") and the
// words that may follow it: subcommands, then flags.
type completionNode struct {
	path  string
	words []string
}

// completionTree is every command path with its words, in a stable order.
func completionTree() []completionNode {
	words := map[string][]string{
		"patchmesh": {"serve", "admin", "client", "hub-key", "node-key", "join", "gossip-key", "storage",
			"version", "completion", "help"},
		"patchmesh serve":        {"--config", "--listen", "--data-dir", "--log-level", "--print-config"},
		"patchmesh client":       {"register", "status", "nodes", "refresh", "--server", "--state-dir", "--machine-id", "--ca-file", "--require-tls", "--proxy", "--output"},
		"patchmesh hub-key":      {"--key", "--endorse", "--output"},
		"patchmesh node-key":     {"--key", "--output"},
		"patchmesh join":         {"--config", "--token-file"},
		"patchmesh gossip-key":   nil,
		"patchmesh storage":      {"copy"},
		"patchmesh storage copy": {"--from", "--to", "--output"},
		"patchmesh version":      {"--output"},
		"patchmesh completion":   {"bash", "zsh", "fish"},
	}
	for _, sub := range []string{"register", "refresh"} {
		words["patchmesh client "+sub] = []string{"--kernel", "--arch"}
	}
	words["patchmesh client refresh"] = append(words["patchmesh client refresh"], "--apply-hook")
	globals := []string{"--server", "--context", "--output", "--ca-file"}
	var top []string
	for _, c := range adminCommands {
		group, sub, grouped := strings.Cut(c.name, " ")
		if !slices.Contains(top, group) {
			top = append(top, group)
		}
		if grouped {
			words["patchmesh admin "+group] = append(words["patchmesh admin "+group], sub)
		}
		var own []string
		commandFlags(c).VisitAll(func(f *flag.Flag) {
			if !globalFlags[f.Name] {
				own = append(own, "--"+f.Name)
			}
		})
		words["patchmesh admin "+c.name] = append(append(own, globals...), "--help")
	}
	words["patchmesh admin"] = append(append(top, globals...), "--help")
	for _, group := range top {
		if _, ok := findCommand(group); !ok {
			words["patchmesh admin "+group] = append(words["patchmesh admin "+group], "--help")
		}
	}
	paths := make([]string, 0, len(words))
	for p := range words {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	tree := make([]completionNode, len(paths))
	for i, p := range paths {
		tree[i] = completionNode{p, words[p]}
	}
	return tree
}

// caseArms writes one shell case arm per path, printing its words; arm
// formats one arm from the quoted path and the words.
func caseArms(tree []completionNode, arm func(path, words string) string) string {
	var b strings.Builder
	for _, n := range tree {
		b.WriteString(arm(n.path, strings.Join(n.words, " ")))
	}
	return b.String()
}

func bashCompletion(tree []completionNode) string {
	return `# bash completion for patchmesh; made by 'patchmesh completion bash'.

# _patchmesh_words prints the words that may follow a command path, and
# fails for a path that is no command.
_patchmesh_words() {
    case "$1" in
` + caseArms(tree, func(path, words string) string {
		return fmt.Sprintf("    %q) echo %q ;;\n", path, words)
	}) + `    *) return 1 ;;
    esac
}

_patchmesh() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev=""
    local cmdpath="patchmesh" i w
    local -a subs=() flags=()
    ((COMP_CWORD > 0)) && prev="${COMP_WORDS[COMP_CWORD-1]}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        [[ "$w" == -* ]] && continue
        _patchmesh_words "$cmdpath $w" >/dev/null && cmdpath="$cmdpath $w"
    done
    if [[ "$prev" == --output ]]; then
        COMPREPLY=($(compgen -W "text json" -- "$cur"))
        return 0
    fi
    for w in $(_patchmesh_words "$cmdpath"); do
        if [[ "$w" == -* ]]; then flags+=("$w"); else subs+=("$w"); fi
    done
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "${flags[*]}" -- "$cur"))
    elif ((${#subs[@]} > 0)); then
        COMPREPLY=($(compgen -W "${subs[*]}" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
}

complete -o filenames -F _patchmesh patchmesh
`
}

func zshCompletion(tree []completionNode) string {
	return `#compdef patchmesh
# zsh completion for patchmesh; made by 'patchmesh completion zsh'.

_patchmesh_words() {
    case "$1" in
` + caseArms(tree, func(path, words string) string {
		return fmt.Sprintf("    %s) echo %s ;;\n", shellQuote(path), shellQuote(words))
	}) + `    *) return 1 ;;
    esac
}

_patchmesh() {
    local cmdpath="patchmesh" w i
    local -a all subs flags
    for ((i = 2; i < CURRENT; i++)); do
        w="${words[i]}"
        [[ "$w" == -* ]] && continue
        _patchmesh_words "$cmdpath $w" >/dev/null && cmdpath="$cmdpath $w"
    done
    if [[ "${words[CURRENT-1]}" == --output ]]; then
        compadd -- text json
        return
    fi
    all=(${=$(_patchmesh_words "$cmdpath")})
    for w in $all; do
        if [[ "$w" == -* ]]; then flags+=("$w"); else subs+=("$w"); fi
    done
    if [[ "${words[CURRENT]}" == -* ]]; then
        compadd -- $flags
    elif (( ${#subs} > 0 )); then
        compadd -- $subs
    else
        _files
    fi
}

if [[ "$funcstack[1]" == _patchmesh ]]; then
    _patchmesh "$@"
else
    compdef _patchmesh patchmesh
fi
`
}

func fishCompletion(tree []completionNode) string {
	return `# fish completion for patchmesh; made by 'patchmesh completion fish'.

function __patchmesh_words
    switch "$argv[1]"
` + caseArms(tree, func(path, words string) string {
		return fmt.Sprintf("        case %s\n            echo %s\n", shellQuote(path), shellQuote(words))
	}) + `        case '*'
            return 1
    end
end

function __patchmesh_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    set -e tokens[1]
    set -l cmdpath patchmesh
    for w in $tokens
        string match -q -- '-*' $w; and continue
        if __patchmesh_words "$cmdpath $w" >/dev/null
            set cmdpath "$cmdpath $w"
        end
    end
    if test (count $tokens) -gt 0; and test "$tokens[-1]" = --output
        printf '%s\n' text json
        return
    end
    set -l words (string split ' ' -- (__patchmesh_words "$cmdpath"))
    set -l subs (string match -v -- '-*' $words)
    if string match -q -- '-*' "$cur"
        string match -- '-*' $words
    else if test (count $subs) -gt 0
        printf '%s\n' $subs
    else
        __fish_complete_path "$cur"
    end
end

complete -c patchmesh -f -a '(__patchmesh_complete)'
`
}

// shellQuote single-quotes s for sh, zsh and fish: the command paths and
// words hold only letters, digits, '-' and spaces, so no quote to escape.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "") + "'" }
