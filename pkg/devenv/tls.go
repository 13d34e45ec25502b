package devenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flotilla-dev/flotilla/deploy/liveread"
)

// TLS is the environment's certificate authority and the serving
// certificate NATS, the gate's webhook and the dispatcher's live reads
// present (for 127.0.0.1, localhost and the live reads' Service), made in Go on the first `make up` and kept after.
type TLS struct {
	CA, Cert, Key string
}

// EnsureTLS makes (or finds) the CA and serving certificate under dir.
func EnsureTLS(dir string) (TLS, error) {
	t := TLS{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "server.crt"), Key: filepath.Join(dir, "server.key")}
	if pair, err := tls.LoadX509KeyPair(t.Cert, t.Key); err == nil && pair.Leaf != nil && pair.Leaf.VerifyHostname(liveread.ServiceHost) == nil {
		if _, err := os.Stat(t.CA); err == nil {
			return t, nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return t, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return t, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "flotilla-dev-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return t, fmt.Errorf("devenv: CA: %w", err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return t, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return t, err
	}
	leaf := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "flotilla-dev"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(2 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// The hub's API server reaches the dispatcher's live reads by its Service's name.
		DNSNames: []string{"localhost", liveread.ServiceHost}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return t, fmt.Errorf("devenv: serving certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return t, err
	}
	for path, block := range map[string]*pem.Block{
		t.CA:   {Type: "CERTIFICATE", Bytes: caDER},
		t.Cert: {Type: "CERTIFICATE", Bytes: der},
		t.Key:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			return t, err
		}
	}
	return t, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// storeKey is the key JetStream encrypts its files with (made once, kept
// beside the other keys, readable only by the owner).
func storeKey(path string) (string, error) {
	if data, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(data)), nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	key := hex.EncodeToString(b)
	return key, os.WriteFile(path, []byte(key+"\n"), 0o600)
}
