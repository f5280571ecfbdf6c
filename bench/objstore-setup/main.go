// Command objstore-setup makes the bucket and the container named by its
// argument on the MinIO and Swift servers of PATCHMESH_TEST_S3 and
// PATCHMESH_TEST_SWIFT, for bench/objstore.sh.
package main

import (
	"context"
	"fmt"
	"net/url"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/ncw/swift/v2"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "objstore-setup:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: objstore-setup NAME")
	}
	name := args[0]
	ctx := context.Background()
	u, err := url.Parse(os.Getenv("PATCHMESH_TEST_S3"))
	if err != nil || u.User == nil {
		return fmt.Errorf("PATCHMESH_TEST_S3 must be http://ACCESS:SECRET@HOST:PORT")
	}
	secret, _ := u.User.Password()
	c := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(u.Scheme + "://" + u.Host), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(u.User.Username(), secret, "")})
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name}); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	su, err := url.Parse(os.Getenv("PATCHMESH_TEST_SWIFT"))
	if err != nil {
		return err
	}
	q := su.Query()
	su.RawQuery = ""
	conn := &swift.Connection{UserName: q.Get("user"), ApiKey: q.Get("key"), AuthUrl: su.String(), AuthVersion: 1}
	if err := conn.ContainerCreate(ctx, name, nil); err != nil {
		return fmt.Errorf("create container: %w", err)
	}
	return nil
}
