// Renders a Helm chart's templates with Go's text/template (the engine Helm uses) and the
// Helm functions our chart needs: include, toJson, b64enc, sha256sum. Reads
// {"Values": ..., "Release": {...}, "Chart": {...}} as JSON on stdin; args: templates dir.
// Stands in for `helm template` where no helm binary is installed.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
)

func main() {
	var context map[string]interface{}
	if err := json.NewDecoder(os.Stdin).Decode(&context); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	root := template.New("chart").Option("missingkey=error")
	funcs := template.FuncMap{
		"toJson": func(v interface{}) string { b, _ := json.Marshal(v); return string(b) },
		"b64enc": func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
		"sha256sum": func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) },
		"include": func(name string, data interface{}) (string, error) {
			var buf bytes.Buffer
			err := root.ExecuteTemplate(&buf, name, data)
			return buf.String(), err
		},
	}
	root.Funcs(funcs)
	files, _ := filepath.Glob(filepath.Join(os.Args[1], "*"))
	sort.Strings(files)
	for _, file := range files {
		text, err := os.ReadFile(file)
		if err != nil {
			panic(err)
		}
		if _, err := root.New(filepath.Base(file)).Parse(string(text)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	for _, file := range files {
		name := filepath.Base(file)
		if strings.HasPrefix(name, "_") || !strings.HasSuffix(name, ".yaml") {
			continue
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, context); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("---\n# Source: %s\n%s\n", name, buf.String())
	}
}
