package topology

import "testing"

func TestCheckMeta(t *testing.T) {
	for _, tc := range []struct {
		name, meta string
		ok         bool
	}{
		{"empty", ``, true},
		{"own name", `{"n":"a","api":"https://a.example:8443","u":{"stable":"http://hub.example"}}`, true},
		{"garbled", `{"n":`, false},
		{"another name", `{"n":"b"}`, false},
		{"ftp api", `{"n":"a","api":"ftp://a.example"}`, false},
		{"credentials", `{"n":"a","api":"https://u:p@a.example"}`, false},
		{"bad upstream", `{"n":"a","up":"file:///etc/passwd"}`, false},
		{"peer port", `{"n":"a","api":"http://10.0.0.5:8080","p":":8444"}`, true},
		{"peer URL", `{"n":"a","api":"http://10.0.0.5:8080","p":"https://peer.example:8444"}`, true},
		{"peer port without api", `{"n":"a","p":":8444"}`, false},
		{"plain http peer", `{"n":"a","api":"http://a.example","p":"http://a.example:8444"}`, false},
		{"peer with a path", `{"n":"a","p":"https://a.example:8444/v1/sync"}`, false},
		{"peer without port", `{"n":"a","p":"https://a.example"}`, false},
		{"peer without host", `{"n":"a","p":"https://:8444"}`, false},
	} {
		err := CheckMeta("a", []byte(tc.meta))
		if (err == nil) != tc.ok {
			t.Errorf("%s: got %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
