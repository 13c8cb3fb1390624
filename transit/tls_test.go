package transit_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, as PEM files in dir.
func pki(t *testing.T, dir string) (ca, serverCert, serverKey, clientCert, clientKey string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name, "EC PRIVATE KEY", der)
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	sDER, sKey := leaf(2, "server", x509.ExtKeyUsageServerAuth)
	cDER, cKey := leaf(3, "client", x509.ExtKeyUsageClientAuth)
	return write("ca.pem", "CERTIFICATE", caDER),
		write("server.pem", "CERTIFICATE", sDER), writeKey("server-key.pem", sKey),
		write("client.pem", "CERTIFICATE", cDER), writeKey("client-key.pem", cKey)
}

// TestNATSClusterWithTLS: against a NATS server that requires TLS with
// client certificates (what --nats tls://… --nats-ca --nats-cert
// --nats-key configure), messages travel with the right certificates,
// and a client without them is refused.
func TestNATSClusterWithTLS(t *testing.T) {
	dir := t.TempDir()
	ca, sCert, sKey, cCert, cKey := pki(t, dir)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: sCert, KeyFile: sKey, CaFile: ca, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: filepath.Join(dir, "js"),
		TLS: true, TLSVerify: true, TLSConfig: tc, NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	url := strings.Replace(s.ClientURL(), "nats://", "tls://", 1)

	t.Run("with CA and client certificate", func(t *testing.T) {
		tr := open(t, "", transit.Options{NATSURL: url, NATSOptions: []nats.Option{nats.RootCAs(ca), nats.ClientCert(cCert, cKey)}})
		ctx := ctxT(t, 20*time.Second)
		if err := tr.Send(ctx, "tlsq", message.Message{"over": "tls"}, transit.SendOptions{}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		got, err := tr.Receive(ctx, "tlsq")
		if err != nil || got["over"] != "tls" {
			t.Fatalf("Receive: got %v, %v; want over=tls", got, err)
		}
	})
	for _, tc := range []struct {
		name string
		opts []nats.Option
	}{
		{"no client certificate", []nats.Option{nats.RootCAs(ca)}},
		{"server not trusted", []nats.Option{nats.ClientCert(cCert, cKey)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t, 20*time.Second)
			tr, err := transit.Open(ctx, transit.Options{NATSURL: url, NATSOptions: append(tc.opts, nats.MaxReconnects(0)), Host: "testhost"})
			if err == nil {
				tr.Close()
				t.Fatalf("Open: got a connection, want refused")
			}
		})
	}
}
