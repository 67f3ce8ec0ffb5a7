package cluster

// Role is a member's role in the cluster. The numeric values are part of the
// heartbeat protocol (they travel in every frame): append only, never
// renumber. The zero value is invalid.
type Role uint8

// Roles, as carried on the wire.
const (
	RoleInvalid   Role = 0
	RoleStarting  Role = 1 // hello state: heard nobody yet, or waiting hello_holddown
	RoleSecondary Role = 2
	RolePrimary   Role = 3
	RoleFault     Role = 4 // cannot serve (e.g. a data interface is missing)
)

// String returns the role as printed by agentctl and in the status JSON.
func (r Role) String() string {
	switch r {
	case RoleStarting:
		return "starting"
	case RoleSecondary:
		return "secondary"
	case RolePrimary:
		return "primary"
	case RoleFault:
		return "fault"
	}
	return "invalid"
}

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool { return r >= RoleStarting && r <= RoleFault }
