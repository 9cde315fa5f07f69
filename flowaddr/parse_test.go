package flowaddr_test

import "github.com/flowspread/flowspread/flowaddr"

var sinkKey flowaddr.Key
