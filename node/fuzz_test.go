package node

import "testing"

// FuzzLoadYAML: any bytes as a config file either load into a config, or
// are refused with an error; a loaded config validates or says why, and
// nothing panics.
func FuzzLoadYAML(f *testing.F) {
	for _, s := range []string{
		"server:\n  listen: 127.0.0.1:8080\n",
		"governor:\n  max_in_flight: 10\n  queue_timeout: 1s\n",
		"auth:\n  admins:\n    - name: alice\n      password_hash: $2a$04$abc\n  login_delay: 2s\n",
		"server:\n  trusted_proxies: [10.0.0.0/8, 192.0.2.1]\n  admin_networks: ['::1/128']\n",
		"sync:\n  links:\n    - tier: stable\n      upstreams:\n        - url: https://hub.example\n          token: x\n",
		"a: &a [*a]\n", "- 1\n", "server: {listen: [1, 2]}\n", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c := DefaultsWithEnv(func(string) string { return "" })
		if err := c.decode(b); err != nil {
			return
		}
		_ = c.Validate()
	})
}
