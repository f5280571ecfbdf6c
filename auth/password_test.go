package auth

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestHashPasswordBounds(t *testing.T) {
	cases := []struct {
		name     string
		password string
		wantErr  error
	}{
		{"empty", "", ErrPasswordLength},
		{"11 bytes", strings.Repeat("a", 11), ErrPasswordLength},
		{"12 bytes", strings.Repeat("a", 12), nil},
		{"72 bytes", strings.Repeat("a", 72), nil},
		{"73 bytes", strings.Repeat("a", 73), ErrPasswordLength},
		// Four bytes per rune: 3 runes are 12 bytes, which is what counts.
		{"12 bytes of UTF-8", "😀😀😀", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := HashPassword(c.password, bcrypt.MinCost)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("HashPassword(%d bytes): want error %v, got %v", len(c.password), c.wantErr, err)
			}
			if err != nil {
				return
			}
			if err := bcrypt.CompareHashAndPassword([]byte(h), []byte(c.password)); err != nil {
				t.Errorf("hash does not verify its password: %v", err)
			}
			if bcrypt.CompareHashAndPassword([]byte(h), []byte("x"+c.password[1:])) == nil {
				t.Errorf("hash verifies a different password")
			}
		})
	}
}

func TestHashPasswordCost(t *testing.T) {
	h, err := HashPassword("correct horse battery", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := bcrypt.Cost([]byte(h)); got != bcrypt.DefaultCost {
		t.Errorf("cost 0: want bcrypt.DefaultCost %d, got %d", bcrypt.DefaultCost, got)
	}
	h, err = HashPassword("correct horse battery", bcrypt.MinCost+1)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := bcrypt.Cost([]byte(h)); got != bcrypt.MinCost+1 {
		t.Errorf("cost %d: got %d", bcrypt.MinCost+1, got)
	}
	if _, err := HashPassword("correct horse battery", bcrypt.MaxCost+1); err == nil {
		t.Errorf("cost %d: want an error, got none", bcrypt.MaxCost+1)
	}
}

func TestConfigValidate(t *testing.T) {
	hash, err := HashPassword("correct horse battery", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"one admin", Config{Admins: []Admin{{Name: "alice", PasswordHash: hash}}}, true},
		{"bad name", Config{Admins: []Admin{{Name: "Alice!", PasswordHash: hash}}}, false},
		{"duplicate name", Config{Admins: []Admin{{Name: "alice", PasswordHash: hash}, {Name: "alice", PasswordHash: hash}}}, false},
		{"plain-text password", Config{Admins: []Admin{{Name: "alice", PasswordHash: "correct horse battery"}}}, false},
		{"negative ttl", Config{MacaroonTTL: -1}, false},
		{"negative key mint", Config{KeyMint: -1}, false},
		{"bcrypt cost too high", Config{BcryptCost: 99}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if (err == nil) != c.ok {
				t.Errorf("Validate: want ok=%v, got %v", c.ok, err)
			}
		})
	}
}
