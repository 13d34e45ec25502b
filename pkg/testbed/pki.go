package testbed

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is one cluster's key material, written as PEM files under dir. Each
// cluster gets its own CA and service-account key, so a credential of one
// cluster is worthless in another, as it would be with real clusters.
type pki struct {
	dir string

	caCert []byte // PEM
}

// Paths of the files newPKI writes.
func (p *pki) caFile() string          { return filepath.Join(p.dir, "ca.crt") }
func (p *pki) caKeyFile() string       { return filepath.Join(p.dir, "ca.key") }
func (p *pki) servingCertFile() string { return filepath.Join(p.dir, "apiserver.crt") }
func (p *pki) servingKeyFile() string  { return filepath.Join(p.dir, "apiserver.key") }
func (p *pki) adminCertFile() string   { return filepath.Join(p.dir, "admin.crt") }
func (p *pki) adminKeyFile() string    { return filepath.Join(p.dir, "admin.key") }
func (p *pki) saKeyFile() string       { return filepath.Join(p.dir, "sa.key") }
func (p *pki) saPubFile() string       { return filepath.Join(p.dir, "sa.pub") }

// The front proxy's own CA and client certificate: the API server presents
// it to aggregated API servers, which trust the person it names
// (X-Remote-User) only when the request comes with it.
func (p *pki) frontProxyCAFile() string   { return filepath.Join(p.dir, "front-proxy-ca.crt") }
func (p *pki) frontProxyCertFile() string { return filepath.Join(p.dir, "front-proxy-client.crt") }
func (p *pki) frontProxyKeyFile() string  { return filepath.Join(p.dir, "front-proxy-client.key") }

// FrontProxyClientName is the common name of the front proxy's client
// certificate, the one name aggregated API servers accept identities from.
const FrontProxyClientName = "front-proxy-client"

// newPKI generates a CA, a serving certificate for the loopback API server, an
// admin client certificate (O=system:masters) and an RSA service-account key
// pair, all in Go so the test bed needs no openssl or cfssl.
func newPKI(dir, cluster string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki for %s: %w", cluster, err)
	}
	p := &pki{dir: dir}
	now := time.Now().Add(-time.Hour) // tolerate small clock skew between processes
	notAfter := now.Add(10 * 365 * 24 * time.Hour)

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki for %s: CA key: %w", cluster, err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "flotilla-testbed-" + cluster + "-ca"},
		NotBefore:             now,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("pki for %s: CA certificate: %w", cluster, err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("pki for %s: CA certificate: %w", cluster, err)
	}
	p.caCert = pemBlock("CERTIFICATE", caDER)
	if err := writePEM(p.caFile(), p.caCert); err != nil {
		return nil, err
	}
	if err := writeKey(p.caKeyFile(), caKey); err != nil {
		return nil, err
	}

	serving := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
	}
	if err := issue(ca, caKey, serving, p.servingCertFile(), p.servingKeyFile()); err != nil {
		return nil, fmt.Errorf("pki for %s: serving certificate: %w", cluster, err)
	}
	admin := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "flotilla-testbed-admin", Organization: []string{"system:masters"}},
		NotBefore:    now,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := issue(ca, caKey, admin, p.adminCertFile(), p.adminKeyFile()); err != nil {
		return nil, fmt.Errorf("pki for %s: admin certificate: %w", cluster, err)
	}

	if err := p.frontProxy(now, notAfter); err != nil {
		return nil, fmt.Errorf("pki for %s: front proxy: %w", cluster, err)
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("pki for %s: service-account key: %w", cluster, err)
	}
	if err := writeKey(p.saKeyFile(), saKey); err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, fmt.Errorf("pki for %s: service-account public key: %w", cluster, err)
	}
	if err := writePEM(p.saPubFile(), pemBlock("PUBLIC KEY", pub)); err != nil {
		return nil, err
	}
	return p, nil
}

// frontProxy makes a CA of its own for the front proxy (as kubeadm does):
// a client certificate of the cluster's CA must never pass for it.
func (p *pki) frontProxy(now, notAfter time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "front-proxy-ca"},
		NotBefore: now, NotAfter: notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	if err := writePEM(p.frontProxyCAFile(), pemBlock("CERTIFICATE", der)); err != nil {
		return err
	}
	client := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: FrontProxyClientName},
		NotBefore: now, NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return issue(ca, key, client, p.frontProxyCertFile(), p.frontProxyKeyFile())
}

func issue(ca *x509.Certificate, caKey crypto.Signer, tmpl *x509.Certificate, certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	if err := writePEM(certFile, pemBlock("CERTIFICATE", der)); err != nil {
		return err
	}
	return writeKey(keyFile, key)
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key %s: %w", path, err)
	}
	return writePEM(path, pemBlock("PRIVATE KEY", der))
}

func writePEM(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		// crypto/rand does not fail on Linux; a fixed serial is still valid.
		return big.NewInt(1)
	}
	return n
}
